#!/usr/bin/env python3
"""Reference logits for weights served by name (`--weights hf:ORG/NAME`), independent of effnet.

pytorch-image-models evaluates with `resolve_data_config(use_test_size=True)` + `create_transform`: the
`transforms_imagenet_eval` pipeline of torchvision transforms on a PIL image. This script runs the same
pipeline with PIL directly (torchvision's `Resize` on a PIL image is `Image.resize` with the same sizes;
`CenterCrop`, timm's `ResizeKeepRatio` and `CenterCropOrPad` are written out from their sources), then the
float64 numpy network of tools/reference.py on the real Lite0 weights. Nothing here imports effnet, torch or
timm.

    python3 tools/timm_reference.py   # writes fixtures/timm_reference.json (needs numpy and Pillow)
"""
import json, math, os, sys
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402

ROOT = reference.ROOT
INTERPOLATION = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}

# timm's pretrained_cfg for tf_efficientnet_lite0.in1k (timm/models/efficientnet.py), as its config.json has it.
LITE0_CFG = {
    "input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center",
    "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "num_classes": 1000, "pool_size": [7, 7],
    "first_conv": "conv_stem", "classifier": "classifier", "license": "apache-2.0",
}


def center_crop(img, size):
    """torchvision CenterCrop on PIL: offsets int(round((dim - size) / 2))."""
    w, h = img.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def center_crop_or_pad(img, size, fill):
    """timm CenterCropOrPad: pad (left/top get the floor half) with `fill`, then centre crop."""
    w, h = img.size
    if size > w or size > h:
        pw, ph = max(size - w, 0), max(size - h, 0)
        canvas = Image.new("RGB", (w + pw, h + ph), tuple(fill))
        canvas.paste(img, (pw // 2, ph // 2))
        img = canvas
    return center_crop(img, size)


def timm_eval_transform(img, cfg):
    """transforms_imagenet_eval with the test-time size and crop, as resolve_data_config(use_test_size=True)."""
    size = (cfg.get("test_input_size") or cfg["input_size"])[1]
    crop_pct = cfg.get("test_crop_pct") if cfg.get("test_input_size") else None
    crop_pct = crop_pct or cfg.get("crop_pct") or 0.875
    mode = cfg.get("crop_mode") or "center"
    interp = INTERPOLATION[cfg.get("interpolation", "bicubic")]
    scale = math.floor(size / crop_pct)
    w, h = img.size
    if mode == "squash":
        img = center_crop(img.resize((scale, scale), interp), size)
    elif mode == "border":
        ratio = max(h / scale, w / scale)
        nh, nw = round(h / ratio), round(w / ratio)
        fill = [round(255 * v) for v in cfg["mean"]]
        img = center_crop_or_pad(img.resize((nw, nh), interp), size, fill)
    else:
        nw, nh = (scale, int(scale * h / w)) if w <= h else (int(scale * w / h), scale)
        img = center_crop(img.resize((nw, nh), interp), size)
    x = np.asarray(img, dtype=np.float64) / 255.0
    x = (x - np.array(cfg["mean"])) / np.array(cfg["std"])
    return x.transpose(2, 0, 1)


def main():
    lite0 = reference.lite0_canonical()
    cases = {}
    variants = {
        "center": ({}, ["coffee.png", "camera.png"]),
        "test_size_squash": ({"test_input_size": [3, 256, 256], "test_crop_pct": 1.0, "crop_mode": "squash"},
                             ["chelsea.png"]),
        "border": ({"crop_pct": 1.0, "crop_mode": "border", "interpolation": "bilinear"}, ["rocket.jpg"]),
    }
    for label, (change, images) in variants.items():
        cfg = dict(LITE0_CFG, **change)
        config = {"architecture": "tf_efficientnet_lite0", "num_classes": 1000, "num_features": 1280,
                  "pretrained_cfg": dict(cfg, tag="in1k")}
        for image in images:
            img = Image.open(os.path.join(ROOT, "assets", "images", image)).convert("RGB")
            logits = reference.forward("lite0", lite0, timm_eval_transform(img, cfg), "tf-same", 1e-3)
            order = np.argsort(-logits)
            cases[f"{label}_{image.split('.')[0]}"] = {
                "config": config, "image": image, "logits": [float(v) for v in logits], "top5": order[:5].tolist()}
            print(f"{label} {image}: top-5 {order[:5].tolist()}", file=sys.stderr)
    path = os.path.join(ROOT, "fixtures", "timm_reference.json")
    with open(path + ".part", "w") as f:
        json.dump({"generator": "tools/timm_reference.py (PIL + numpy float64)", "cases": cases}, f)
    os.replace(path + ".part", path)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
