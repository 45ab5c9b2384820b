#!/usr/bin/env python3
"""Training recipes on small real datasets: trains `effnet train` from scratch over a grid of settings and
seeds on each dataset, and prints the validation accuracy (best epoch) per grid point, mean over seeds, as
JSON lines and a markdown table.

usage: recipe_bench.py --effnet BIN --dataset NAME=TRAIN,VAL[,IMG_SIZE[,EPOCHS]] ... \
           [--grid min_crop=0.08,0.35,0.7 --grid bn_momentum=0.9,0.99] [--seeds 0,1,2] [--batch 32] \
           [--phi -4] [--out DIR] [--extra "--no-flip"]

Each grid axis is a `train` flag (underscores for dashes) with its values; `defaults` (no flag) is always
run too."""

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time


def run(effnet, train, val, size, epochs, batch, phi, seed, flags, out, extra):
    args = [effnet, "train", "--json", "--data", train, "--val", val, "--model", "b0", "--phi", str(phi),
            "--img-size", str(size), "--batch", str(batch), "--epochs", str(epochs), "--seed", str(seed),
            "--out", out, *extra]
    for name, value in flags:
        args += [f"--{name.replace('_', '-')}", str(value)]
    started = time.time()
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:], "seconds": time.time() - started}
    state = json.loads(done.stdout)
    return {"best": state["best_accuracy"], "last": state["records"][-1]["val_accuracy"],
            "seconds": time.time() - started}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--effnet", required=True)
    p.add_argument("--dataset", action="append", required=True)
    p.add_argument("--grid", action="append", default=[])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--phi", type=float, default=-4)
    p.add_argument("--out", default="recipe-bench")
    p.add_argument("--extra", default="")
    a = p.parse_args()
    axes = []
    for g in a.grid:
        name, values = g.split("=", 1)
        axes.append([(name, v) for v in values.split(",")])
    points = [()] + list(itertools.product(*axes)) if axes else [()]
    seeds = [int(s) for s in a.seeds.split(",")]
    rows = []
    for spec in a.dataset:
        name, rest = spec.split("=", 1)
        parts = rest.split(",")
        train, val = parts[0], parts[1]
        size = int(parts[2]) if len(parts) > 2 else 32
        epochs = int(parts[3]) if len(parts) > 3 else 10
        for point in points:
            results = []
            for seed in seeds:
                tag = "_".join(f"{k}{v}" for k, v in point) or "defaults"
                out = os.path.join(a.out, name, f"{tag}_s{seed}")
                r = run(a.effnet, train, val, size, epochs, a.batch, a.phi, seed, point, out, a.extra.split())
                results.append(r)
            ok = [r["best"] for r in results if "best" in r]
            row = {"dataset": name, "point": dict(point) or "defaults",
                   "mean_best": statistics.mean(ok) if ok else None, "best": ok,
                   "errors": [r["error"] for r in results if "error" in r],
                   "seconds": sum(r["seconds"] for r in results)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| dataset | settings | mean best val acc | per seed |\n|---|---|---|---|")
    for r in rows:
        point = "defaults" if r["point"] == "defaults" else " ".join(f"--{k.replace('_', '-')} {v}" for k, v in r["point"].items())
        mean = "failed" if r["mean_best"] is None else f"{100 * r['mean_best']:.1f}%"
        print(f"| {r['dataset']} | {point} | {mean} | {', '.join(f'{100 * b:.1f}' for b in r['best'])} |")


if __name__ == "__main__":
    sys.exit(main())
