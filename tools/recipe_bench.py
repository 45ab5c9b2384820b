#!/usr/bin/env python3
"""Training recipes on small real datasets: trains `effnet train` over a grid of settings and seeds on each
dataset, and prints the validation accuracy (best epoch) per grid point, mean over seeds, as JSON lines
(also appended to OUT/results.jsonl) and a markdown table. `tools/recipe_datasets.py` builds the datasets.

usage: recipe_bench.py --effnet BIN --dataset NAME=TRAIN,VAL[,IMG_SIZE[,EPOCHS]] ... \
           [--grid min_crop=0.08,0.35,0.7 --grid bn_momentum=0.9,0.99] [--point "recipe=official"] \
           [--no-defaults] [--find-lr] [--seeds 0,1,2] [--batch 32] [--model-args "--model b0 --phi -4"] \
           [--out DIR] [--extra "--no-flip"]
       recipe_bench.py --report DIR ...   (merges the results.jsonl of several runs, e.g. more seeds)

Each grid axis is a `train` flag (underscores for dashes) with its values, and the grid is their product;
each `--point` is one more set of flags. `defaults` (no flag) runs too unless `--no-defaults`. `--find-lr`
also runs the range test with the defaults for each seed and reports its suggested rate."""

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time


def train(a, dataset, seed, flags, out):
    name, train_dir, val_dir, size, epochs = dataset
    args = [a.effnet, "train", "--json", "--data", train_dir, "--val", val_dir, *a.model_args.split(),
            "--img-size", str(size), "--batch", str(a.batch), "--epochs", str(epochs), "--seed", str(seed),
            "--out", out, *a.extra.split()]
    for flag, value in flags:
        args.append(f"--{flag.replace('_', '-')}")
        if value != "":
            args.append(str(value))
    started = time.time()
    done = subprocess.run(args, capture_output=True, text=True)
    seconds = time.time() - started
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:], "seconds": seconds}
    return {"state": json.loads(done.stdout), "seconds": seconds}


def record(a, row):
    print(json.dumps(row), flush=True)
    with open(os.path.join(a.out, "results.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


def parse_point(text):
    return tuple(tuple(item.split("=", 1)) if "=" in item else (item, "") for item in text.split())


def point_name(point):
    """A grid point as the flags it adds, or `defaults`."""
    if point == "defaults":
        return point
    return " ".join(f"--{k.replace('_', '-')} {v}".strip() for k, v in point.items())


def report(dirs):
    """One table over the results of several runs: the seeds of each (dataset, point) pooled, the mean
    over the first three seeds run and over all, and the range test's suggestions."""
    rows, rates = {}, {}
    for d in dirs:
        with open(os.path.join(d, "results.jsonl")) as f:
            for line in f:
                r = json.loads(line)
                if "find_lr" in r:
                    rates.setdefault(r["dataset"], []).extend(r["find_lr"])
                    continue
                key = (r["dataset"], json.dumps(r["point"], sort_keys=True))
                rows.setdefault(key, []).extend(r["best"])
    print("| dataset | settings | mean of 3 seeds | mean of all | seeds | per seed |\n|---|---|---|---|---|---|")
    for (dataset, point), best in rows.items():
        point = json.loads(point)
        name = point_name(point)
        print(f"| {dataset} | {name} | {100 * statistics.mean(best[:3]):.1f}% | {100 * statistics.mean(best):.1f}% "
              f"| {len(best)} | {', '.join(f'{100 * b:.1f}' for b in best)} |")
    for dataset, found in rates.items():
        print(f"range test on {dataset}: " + ", ".join(f"{r:.2e}" for r in found))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--report":
        return report(sys.argv[2:])
    p = argparse.ArgumentParser()
    p.add_argument("--effnet", required=True)
    p.add_argument("--dataset", action="append", required=True)
    p.add_argument("--grid", action="append", default=[])
    p.add_argument("--point", action="append", default=[])
    p.add_argument("--no-defaults", action="store_true")
    p.add_argument("--find-lr", action="store_true")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--model-args", default="--model b0 --phi -4")
    p.add_argument("--out", default="recipe-bench")
    p.add_argument("--extra", default="")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    axes = [[(g.split("=", 1)[0], v) for v in g.split("=", 1)[1].split(",")] for g in a.grid]
    points = [] if a.no_defaults else [()]
    points += list(itertools.product(*axes)) if axes else []
    points += [parse_point(t) for t in a.point]
    seeds = [int(s) for s in a.seeds.split(",")]
    rows = []
    for spec in a.dataset:
        name, rest = spec.split("=", 1)
        parts = rest.split(",")
        dataset = (name, parts[0], parts[1], int(parts[2]) if len(parts) > 2 else 32,
                   int(parts[3]) if len(parts) > 3 else 10)
        if a.find_lr:
            rates = []
            for seed in seeds:
                r = train(a, dataset, seed, [("find_lr", "")], os.path.join(a.out, name, f"find_lr_s{seed}"))
                rates.append(r["state"]["suggested"] if "state" in r else None)
            record(a, {"dataset": name, "find_lr": rates})
        for point in points:
            tag = "_".join(f"{k}{v}" for k, v in point) or "defaults"
            results = [train(a, dataset, seed, point, os.path.join(a.out, name, f"{tag}_s{seed}")) for seed in seeds]
            ok = [r["state"]["best_accuracy"] for r in results if "state" in r]
            row = {"dataset": name, "point": dict(point) or "defaults",
                   "mean_best": statistics.mean(ok) if ok else None, "best": ok,
                   "last": [r["state"]["records"][-1]["val_accuracy"] for r in results if "state" in r],
                   "errors": [r["error"] for r in results if "error" in r],
                   "seconds": sum(r["seconds"] for r in results)}
            rows.append(row)
            record(a, row)
    print("\n| dataset | settings | mean best val acc | per seed |\n|---|---|---|---|")
    for r in rows:
        point = point_name(r["point"])
        mean = "failed" if r["mean_best"] is None else f"{100 * r['mean_best']:.1f}%"
        print(f"| {r['dataset']} | {point} | {mean} | {', '.join(f'{100 * b:.1f}' for b in r['best'])} |")


if __name__ == "__main__":
    sys.exit(main())
