"""Compares two `effnet predict --json --logits` outputs (the same images through two builds or
instruction sets): every file must have the same top-5 classes, and logits within a tolerance.

    python3 tools/compare_predictions.py REFERENCE.json OTHER.json [--tolerance 1e-3]
"""
import argparse
import json
import sys


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("reference")
    parser.add_argument("other")
    parser.add_argument("--tolerance", type=float, default=1e-3)
    args = parser.parse_args()
    with open(args.reference) as f:
        reference = json.load(f)
    with open(args.other) as f:
        other = json.load(f)
    if [p["file"] for p in reference] != [p["file"] for p in other]:
        sys.exit("the two outputs list different files")
    failed = False
    for want, got in zip(reference, other):
        name = want["file"]
        if "error" in want or "error" in got:
            print(f"{name}: error in an output: {want.get('error')} / {got.get('error')}")
            failed = True
            continue
        top_want = [r["class"] for r in want["top"]]
        top_got = [r["class"] for r in got["top"]]
        worst = max(abs(a - b) for a, b in zip(want["logits"], got["logits"]))
        ok = top_want == top_got and worst <= args.tolerance
        failed |= not ok
        label = want["top"][0]["label"]
        print(f"{'ok' if ok else 'MISMATCH'} {name}: top-5 {top_got} (reference {top_want}), "
              f"top-1 {label!r}, largest logit difference {worst:.2e}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
