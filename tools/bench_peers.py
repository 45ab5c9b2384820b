#!/usr/bin/env python3
"""Times EfficientNet inference in ONNX Runtime against `effnet bench`, side by side in one run, on the same architecture, batch, resolution and thread count, with random weights.

The ONNX graph is built directly from the architecture rules in tools/reference.py (no torch needed), with
explicit TF-"SAME" pads, batch norm, swish, squeeze-excite and residuals.

    pip install numpy onnx onnxruntime
    cargo build --release
    python3 tools/bench_peers.py --model b0 --batch 1 --threads 2
"""
import argparse, json, os, statistics, subprocess, sys, time
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402

ROOT = reference.ROOT


def same_pads(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2, out


def build_onnx(model, res, batch):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    _, blocks, _, _ = reference.architecture(model)
    lite = reference.NETS[model][3]
    w = reference.random_weights(model, 0)
    nodes, inits, counter = [], [], [0]

    def name(prefix):
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(key):
        inits.append(numpy_helper.from_array(w[key].astype(np.float32), key))
        return key

    def act(x):
        y = name("act")
        if lite:
            lo, hi = name("lo"), name("hi")
            inits.append(numpy_helper.from_array(np.array(0, np.float32), lo))
            inits.append(numpy_helper.from_array(np.array(6, np.float32), hi))
            nodes.append(helper.make_node("Clip", [x, lo, hi], [y]))
        else:
            s = name("sig")
            nodes.append(helper.make_node("Sigmoid", [x], [s]))
            nodes.append(helper.make_node("Mul", [x, s], [y]))
        return y

    def conv_bn(x, layer, size, k, s, groups=1, activation=True):
        top, bottom, out = same_pads(size, k, s)
        c = name("conv")
        nodes.append(helper.make_node("Conv", [x, const(layer + ".weight")], [c], kernel_shape=[k, k],
                                      strides=[s, s], pads=[top, top, bottom, bottom], group=groups))
        b = name("bn")
        nodes.append(helper.make_node("BatchNormalization", [c] + [const(f"{layer}.bn.{f}") for f in
                                      ("weight", "bias", "running_mean", "running_var")], [b], epsilon=1e-3))
        return (act(b) if activation else b), out

    x, size = conv_bn("input", "stem", res, 3, 2)
    for n, (k, s, e, ci, co, se) in enumerate(blocks):
        p, inp = f"blocks.{n}", x
        if e != 1:
            x, _ = conv_bn(x, p + ".expand", size, 1, 1)
        x, size = conv_bn(x, p + ".depthwise", size, k, s, groups=ci * e)
        if se:
            pooled, r, g, gate, scaled = name("pool"), name("r"), name("g"), name("gate"), name("scaled")
            nodes.append(helper.make_node("GlobalAveragePool", [x], [pooled]))
            nodes.append(helper.make_node("Conv", [pooled, const(p + ".se.reduce.weight"), const(p + ".se.reduce.bias")], [r]))
            ra = act(r)
            nodes.append(helper.make_node("Conv", [ra, const(p + ".se.expand.weight"), const(p + ".se.expand.bias")], [g]))
            nodes.append(helper.make_node("Sigmoid", [g], [gate]))
            nodes.append(helper.make_node("Mul", [x, gate], [scaled]))
            x = scaled
        x, _ = conv_bn(x, p + ".project", size, 1, 1, activation=False)
        if s == 1 and ci == co:
            y = name("add")
            nodes.append(helper.make_node("Add", [x, inp], [y]))
            x = y
    x, _ = conv_bn(x, "head", size, 1, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"]))
    nodes.append(helper.make_node("Gemm", ["flat", const("classifier.weight"), const("classifier.bias")], ["logits"], transB=1))
    graph = helper.make_graph(nodes, model, [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, res, res])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 1000])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m.SerializeToString()


def median_ms(fn, warmup, min_runs, min_seconds):
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def bench_ort(model_bytes, x, threads, args):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    return median_ms(lambda: session.run(None, {"input": x}), args.warmup, args.runs, args.min_seconds), session


def bench_effnet(args, res):
    exe = os.path.join(ROOT, "target", "release", "effnet")
    cmd = [exe, "bench", args.model, "--batch", str(args.batch), "--threads", str(args.threads), "--resolution", str(res),
           "--warmup", str(args.warmup), "--runs", str(args.runs), "--min-seconds", str(args.min_seconds), "--json"]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)["ms_per_batch"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="b0", choices=sorted(reference.NETS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--min-seconds", type=float, default=3.0)
    args = ap.parse_args()
    res = reference.NETS[args.model][2]
    x = reference.hash_input(res).astype(np.float32)[None].repeat(args.batch, axis=0)
    rows = []
    ort_ms, _ = bench_ort(build_onnx(args.model, res, args.batch), x, args.threads, args)
    rows.append(("onnxruntime", ort_ms))
    ours = bench_effnet(args, res)
    rows.append(("effnet", ours))
    print(f"{args.model} @{res}, batch {args.batch}, {args.threads} threads (median ms per batch; ratio = effnet / peer)")
    for peer, ms in rows:
        print(f"  {peer:12s} {ms:9.2f} ms  {args.batch * 1e3 / ms:8.1f} img/s   effnet/peer time {ours / ms:5.2f}")


if __name__ == "__main__":
    main()
