#!/usr/bin/env python3
"""Times EfficientNet in ONNX Runtime and PyTorch against `effnet bench`, side by side in one run, on the same
architecture, batch, resolution and thread count, with the same random weights.

The ONNX graph is built from the architecture rules in tools/reference.py, with explicit TF-"SAME" pads,
batch norm, swish, squeeze-excite and residuals. The model `effnet export` writes for the same weights runs in
ONNX Runtime too, as a third peer, and its time is reported against the built graph's. The PyTorch peer is
torchvision's own EfficientNet (B0..B7) when torchvision is installed, in its fastest ordinary configuration
(channels_last, inference_mode); otherwise a module built from tools/reference.py, labelled as the fallback.
With --train, PyTorch's training step (forward, label-smoothed cross-entropy, backward, RMSprop with the
official hyper-parameters) is timed against `effnet bench --train`. A peer that is not installed is skipped.
A peer that takes 4 times the fastest peer's time, or twice its own time in the last run of the same
configuration (kept in --history), is flagged as pathological instead of trusted.

Each peer is timed in --rounds alternating rounds, each round's peer runs followed at once by effnet's, and
the ratio reported is the median of the per-round ratios: on a shared machine whose speed drifts by tens of
percent from minute to minute, a ratio of two runs minutes apart says more about the drift than the code.

    pip install numpy onnx onnxruntime        # PyTorch: pip install torch torchvision
    cargo build --release
    python3 tools/bench_peers.py --model b0 --batch 1 --threads 2
    python3 tools/bench_peers.py --model b0 --batch 8 --threads 2 --train
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


def export_onnx(model, res):
    """The bytes of `effnet export` for the network with the same random weights (seed 0)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "model.onnx")
        exe = os.path.join(ROOT, "target", "release", "effnet")
        subprocess.run([exe, "export", "--model", model, "--random-seed", "0", "--resolution", str(res), "--out", out],
                       check=True, capture_output=True)
        with open(out, "rb") as f:
            return f.read()


def median_ms(fn, warmup, min_runs, min_seconds):
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def ort_session(model_bytes, threads):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def bench_ort(model_bytes, x, threads, args):
    session = ort_session(model_bytes, threads)
    return median_ms(lambda: session.run(None, {"input": x}), args.warmup, args.runs, args.min_seconds)


def interleaved_ratio(first, second, x, args):
    """Median over run-by-run alternations of second's time / first's time (two ONNX models in ONNX Runtime,
    both sessions alive, one run of each in turn), so that drift of the machine cancels out."""
    sessions = [ort_session(m, args.threads) for m in (first, second)]
    for session in sessions:
        for _ in range(args.warmup):
            session.run(None, {"input": x})
    ratios = []
    for _ in range(max(args.runs, 50)):
        times = []
        for session in sessions:
            t = time.perf_counter()
            session.run(None, {"input": x})
            times.append(time.perf_counter() - t)
        ratios.append(times[1] / times[0])
    return statistics.median(ratios)


def bench_effnet(args, res, isa=None):
    """effnet's median time, with its kernels forced to `isa` (EFFNET_ISA) when given."""
    env = dict(os.environ, EFFNET_ISA=isa) if isa else None
    exe = os.path.join(ROOT, "target", "release", "effnet")
    cmd = [exe, "bench", args.model, "--batch", str(args.batch), "--threads", str(args.threads), "--resolution", str(res),
           "--warmup", str(args.warmup), "--runs", str(args.runs), "--min-seconds", str(args.min_seconds), "--json"]
    if args.train:
        cmd = [exe, "bench", args.model, "--train", "--batch", str(args.batch), "--threads", str(args.threads),
               "--resolution", str(res), "--runs", str(args.train_steps), "--json"]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)["ms_per_step"]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)["ms_per_batch"]


def import_torch():
    try:
        import torch
    except ImportError:
        # Debian's python3-torch lives outside a virtual environment's path.
        sys.path.append("/usr/lib/python3/dist-packages")
        try:
            import torch
        except ImportError:
            return None
    return torch


def torch_model(model, torch):
    nn, F = torch.nn, torch.nn.functional
    _, blocks, _, _ = reference.architecture(model)
    lite = reference.NETS[model][3]
    w = reference.random_weights(model, 0)

    def tensor(key):
        a = np.ascontiguousarray(w[key], dtype=np.float32)
        return torch.frombuffer(bytearray(a.tobytes()), dtype=torch.float32).reshape(a.shape)

    def act(x):
        return F.relu6(x) if lite else F.silu(x)

    class ConvBn(nn.Module):
        def __init__(self, layer, k, s, groups=1, activation=True):
            super().__init__()
            weight = tensor(layer + ".weight")
            self.conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], k, s, groups=groups, bias=False)
            self.bn = nn.BatchNorm2d(weight.shape[0], eps=1e-3, momentum=0.01)
            with torch.no_grad():
                self.conv.weight.copy_(weight)
                for f, target in (("weight", self.bn.weight), ("bias", self.bn.bias),
                                  ("running_mean", self.bn.running_mean), ("running_var", self.bn.running_var)):
                    target.copy_(tensor(f"{layer}.bn.{f}"))
            self.k, self.s, self.activation = k, s, activation

        def forward(self, x):
            size = x.shape[-1]
            top, bottom, _ = same_pads(size, self.k, self.s)
            y = self.bn(self.conv(F.pad(x, (top, bottom, top, bottom))))
            return act(y) if self.activation else y

    class Block(nn.Module):
        def __init__(self, n, k, s, e, ci, co, se):
            super().__init__()
            p = f"blocks.{n}"
            self.expand = ConvBn(p + ".expand", 1, 1) if e != 1 else None
            self.depthwise = ConvBn(p + ".depthwise", k, s, groups=ci * e)
            self.se = None
            if se:
                r, g = tensor(p + ".se.reduce.weight"), tensor(p + ".se.expand.weight")
                self.se = nn.ModuleList([nn.Conv2d(r.shape[1], r.shape[0], 1), nn.Conv2d(g.shape[1], g.shape[0], 1)])
                with torch.no_grad():
                    for conv, name in zip(self.se, ("reduce", "expand")):
                        conv.weight.copy_(tensor(f"{p}.se.{name}.weight"))
                        conv.bias.copy_(tensor(f"{p}.se.{name}.bias"))
            self.project = ConvBn(p + ".project", 1, 1, activation=False)
            self.residual = s == 1 and ci == co

        def forward(self, x):
            y = self.expand(x) if self.expand is not None else x
            y = self.depthwise(y)
            if self.se is not None:
                y = y * torch.sigmoid(self.se[1](act(self.se[0](y.mean((2, 3), keepdim=True)))))
            y = self.project(y)
            return y + x if self.residual else y

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = ConvBn("stem", 3, 2)
            self.blocks = nn.Sequential(*[Block(n, *b) for n, b in enumerate(blocks)])
            self.head = ConvBn("head", 1, 1)
            cw = tensor("classifier.weight")
            self.classifier = nn.Linear(cw.shape[1], cw.shape[0])
            with torch.no_grad():
                self.classifier.weight.copy_(cw)
                self.classifier.bias.copy_(tensor("classifier.bias"))

        def forward(self, x):
            return self.classifier(self.head(self.blocks(self.stem(x))).mean((2, 3)))

    return Net()


def torch_peer(torch, model):
    """The PyTorch peer: torchvision's own EfficientNet for `model` when torchvision is installed and has it
    (B0..B7, its own random initialisation and symmetric padding, as its users run it), else the module
    built from tools/reference.py (TF-"SAME" pads done by hand, which costs a pad per convolution), labelled
    as the fallback. Returns (label, function building the module)."""
    version = f"pytorch {torch.__version__.split('+')[0]}"
    try:
        import torchvision
    except ImportError:
        torchvision = None
    constructor = getattr(torchvision.models, f"efficientnet_{model}", None) if torchvision else None
    if constructor is not None:
        label = f"{version} + torchvision {torchvision.__version__.split('+')[0]} efficientnet_{model}"
        return label, lambda: constructor(weights=None)
    why = "torchvision not installed" if torchvision is None else f"torchvision has no {model}"
    return f"{version}, reference-built module (fallback: {why})", lambda: torch_model(model, torch)


def bench_torch(torch, build, x, args):
    torch.set_num_threads(args.threads)
    net = build().to(memory_format=torch.channels_last)
    a = np.ascontiguousarray(x, dtype=np.float32)
    batch = torch.frombuffer(bytearray(a.tobytes()), dtype=torch.float32).reshape(a.shape)
    batch = batch.contiguous(memory_format=torch.channels_last)
    if not args.train:
        net.eval()
        with torch.inference_mode():
            return median_ms(lambda: net(batch), args.warmup, args.runs, args.min_seconds)
    net.train()
    labels = torch.arange(batch.shape[0]) % 1000
    opt = torch.optim.RMSprop(net.parameters(), lr=0.016 * batch.shape[0] / 256, alpha=0.9, eps=1e-3,
                              momentum=0.9, weight_decay=1e-5)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(batch), labels, label_smoothing=0.1)
        loss.backward()
        opt.step()

    step()
    times = []
    for _ in range(args.train_steps):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="b0", choices=sorted(reference.NETS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--min-seconds", type=float, default=3.0)
    ap.add_argument("--train", action="store_true", help="time training steps instead of inference")
    ap.add_argument("--train-steps", type=int, default=5)
    ap.add_argument("--resolution", type=int, default=0, help="input size (default: the model's own)")
    ap.add_argument("--history", default=os.path.join(ROOT, "target", "bench_peers_history.json"),
                    help="where each peer's last median time is kept, to flag a peer much slower than last time")
    ap.add_argument("--rounds", type=int, default=3, help="alternating peer / effnet rounds")
    ap.add_argument("--isa", default="",
                    help="comma-separated instruction sets to time effnet on in each round (EFFNET_ISA: "
                         "avx512, avx2, neon, portable); default: the fastest this CPU runs")
    args = ap.parse_args()
    isas = [isa for isa in args.isa.split(",") if isa] or [None]
    res = args.resolution or reference.NETS[args.model][2]
    x = reference.hash_input(res).astype(np.float32)[None].repeat(args.batch, axis=0)
    # The peers are timed in alternating rounds, each one's runs next to effnet's, so that a slow spell of a
    # shared machine lands on both sides of a ratio; the table gives per-peer medians over the rounds and
    # the median of the per-round ratios.
    peers = []
    if not args.train:
        try:
            import onnxruntime  # noqa: F401
            model_bytes = build_onnx(args.model, res, args.batch)
            peers.append(("onnxruntime", lambda: bench_ort(model_bytes, x, args.threads, args)))
            exported = export_onnx(args.model, res)
            peers.append(("ort, exported", lambda: bench_ort(exported, x, args.threads, args)))
        except ImportError:
            print("onnxruntime / onnx not installed: skipped")
    torch = import_torch()
    if torch is None:
        print("torch not installed: skipped")
    else:
        label, build = torch_peer(torch, args.model)
        peers.append((label, lambda: bench_torch(torch, build, x, args)))
    times = {name: [] for name, _ in peers}
    ratios = {(name, isa): [] for name, _ in peers for isa in isas}
    ours_all = {isa: [] for isa in isas}
    for _ in range(args.rounds):
        for name, bench in peers:
            peer_ms = bench()
            times[name].append(peer_ms)
            for isa in isas:
                ours = bench_effnet(args, res, isa)
                ratios[(name, isa)].append(ours / peer_ms)
                ours_all[isa].append(ours)
    if not peers:
        for isa in isas:
            ours_all[isa].append(bench_effnet(args, res, isa))
    what = "training step" if args.train else "batch"
    med = statistics.median
    print(f"{args.model} @{res}, batch {args.batch}, {args.threads} threads, {args.rounds} alternating rounds "
          f"(median ms per {what}; ratio = median over rounds of effnet / peer)")
    for name, _ in peers:
        ms = med(times[name])
        print(f"  {name:16s} {ms:9.2f} ms  {args.batch * 1e3 / ms:8.1f} img/s")
    if "ort, exported" in times:
        r = interleaved_ratio(model_bytes, exported, x, args)
        print(f"  effnet export / built graph, both in ORT, alternating run by run: time {r:5.2f}")
    for isa in isas:
        ours = med(ours_all[isa])
        label = f"effnet {isa}" if isa else "effnet"
        print(f"  {label:16s} {ours:9.2f} ms  {args.batch * 1e3 / ours:8.1f} img/s")
        for name, _ in peers:
            r = ratios[(name, isa)]
            print(f"    / {name:14s} time {med(r):5.2f}   (rounds: {' '.join(f'{v:.2f}' for v in r)})")
    medians = {name: med(t) for name, t in times.items()}
    key = f"{args.model}@{res} batch {args.batch} threads {args.threads} {'train' if args.train else 'infer'}"
    for warning in pathologies(medians, remember(args.history, key, medians)):
        print(f"  WARNING: {warning}")


# A peer this many times slower than the fastest other peer, or than its own last run of the same
# configuration, is more likely on a slow path (a missing kernel, a layout copy, a debug build) than a fair
# comparison, and a ratio against it would flatter effnet. Eager PyTorch pays a dispatch per operation that
# a graph runtime does not, so at batch 1 it normally takes two to three times ONNX Runtime's time; against
# its own last run the bar is lower.
SLOWER_THAN_PEER = 4.0
SLOWER_THAN_LAST = 2.0


def pathologies(medians, last):
    """Warnings for the peers whose median times look pathological, against the fastest peer and against
    `last`, the medians of the last run of the same configuration."""
    warnings = []
    fastest = min(medians.items(), key=lambda kv: kv[1], default=None)
    for name, ms in medians.items():
        if fastest and name != fastest[0] and ms > SLOWER_THAN_PEER * fastest[1]:
            warnings.append(f"{name} took {ms / fastest[1]:.1f}x the time of {fastest[0]}: it looks pathological, "
                            "so effnet's ratio against it says little")
        if name in last and ms > SLOWER_THAN_LAST * last[name]:
            warnings.append(f"{name} took {ms / last[name]:.1f}x its time of the last run ({last[name]:.1f} ms): "
                            "it looks pathological, or the machine is much busier")
    return warnings


def remember(path, key, medians):
    """Records `medians` under `key` in the history file at `path` (atomically); returns the medians the
    file held for `key` before."""
    try:
        with open(path) as f:
            history = json.load(f)
    except (OSError, ValueError):
        history = {}
    last = history.get(key, {})
    history[key] = {**last, **medians}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(history, f, indent=1)
    os.replace(path + ".tmp", path)
    return last

if __name__ == "__main__":
    main()
