#!/usr/bin/env python3
"""The recipe benchmark's four small real datasets, cut from files inside the scikit-image and scikit-learn
wheels (PyPI), as image folders `NAME/train/CLASS/*.png` and `NAME/val/CLASS/*.png`:

- textures: brick, grass and gravel (CC0), 64 px patches with stride 32, top half of each photo for
  training and bottom half for validation (`effnet patches`): 315 / 315 images, 3 classes;
- photos: which photo is this patch from? Eight CC0 or public-domain photos (coffee, chelsea, camera,
  astronaut, rocket, coins, moon, hubble_deep_field), cut the same way at 64 px with stride 48;
- digits: sklearn's 1,797 8x8 digits scaled to 32 px (nearest), 80/20 with a fixed shuffle: 1,437 / 360,
  10 classes;
- lfw: scikit-image's LFW subset, 100 faces and 100 non-face crops of 25x25 gray, alternate images to
  training and validation: 100 / 100, 2 classes.

usage: recipe_datasets.py --effnet BIN --skimage WHEEL --sklearn WHEEL --out DIR"""

import argparse
import gzip
import io
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
from PIL import Image

PHOTOS = ["coffee.png", "chelsea.png", "camera.png", "astronaut.png", "rocket.jpg", "coins.png", "moon.png",
          "hubble_deep_field.jpg"]
TEXTURES = ["brick.png", "grass.png", "gravel.png"]


def extract(wheel, names, into):
    with zipfile.ZipFile(wheel) as z:
        for name in names:
            with open(os.path.join(into, os.path.basename(name)), "wb") as f:
                f.write(z.read(name))
    return [os.path.join(into, os.path.basename(n)) for n in names]


def patches(effnet, images, out, size, stride):
    subprocess.run([effnet, "patches", "--out", out, "--size", str(size), "--stride", str(stride), *images],
                   check=True, stdout=subprocess.DEVNULL)


def save(array, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def digits(sklearn_wheel, out):
    with zipfile.ZipFile(sklearn_wheel) as z:
        rows = np.loadtxt(io.BytesIO(gzip.decompress(z.read("sklearn/datasets/data/digits.csv.gz"))),
                          delimiter=",")
    order = np.random.default_rng(0).permutation(len(rows))
    cut = int(0.8 * len(rows))
    for rank, i in enumerate(order):
        pixels = (rows[i, :64].reshape(8, 8) * (255.0 / 16.0)).round().astype(np.uint8)
        big = np.kron(pixels, np.ones((4, 4), dtype=np.uint8))
        split = "train" if rank < cut else "val"
        save(big, os.path.join(out, split, str(int(rows[i, 64])), f"{i:04}.png"))


def lfw(skimage_wheel, out):
    with zipfile.ZipFile(skimage_wheel) as z:
        faces = np.load(io.BytesIO(z.read("skimage/data/lfw_subset.npy")))
    for i, face in enumerate(faces):
        label = "face" if i < 100 else "background"
        split = "train" if i % 2 == 0 else "val"
        save((face * 255.0).round().clip(0, 255).astype(np.uint8), os.path.join(out, split, label, f"{i:03}.png"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--effnet", required=True)
    p.add_argument("--skimage", required=True)
    p.add_argument("--sklearn", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        textures = extract(a.skimage, [f"skimage/data/{n}" for n in TEXTURES], tmp)
        photos = extract(a.skimage, [f"skimage/data/{n}" for n in PHOTOS], tmp)
        patches(a.effnet, textures, os.path.join(a.out, "textures"), 64, 32)
        patches(a.effnet, photos, os.path.join(a.out, "photos"), 64, 48)
    digits(a.sklearn, os.path.join(a.out, "digits"))
    lfw(a.skimage, os.path.join(a.out, "lfw"))
    for name in ["textures", "photos", "digits", "lfw"]:
        counts = {s: sum(len(files) for _, _, files in os.walk(os.path.join(a.out, name, s))) for s in ["train", "val"]}
        print(name, counts)


if __name__ == "__main__":
    sys.exit(main())
