#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets under fuzz/corpus/: small valid inputs of every format each
parser takes (a zip and a legacy `.pth` state dict written with the opcodes `torch.save` uses, a safetensors
file with metadata, and tiny PNG, JPEG, BMP, TIFF and WebP images). Needs numpy-free CPython and Pillow.

    pip install pillow && python3 fuzz/make_seeds.py
"""
import io, json, os, struct, zipfile

ROOT = os.path.dirname(os.path.abspath(__file__))


def write(kind, target, name, data):
    d = os.path.join(ROOT, kind, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def out(target, name, data):
    write("corpus", target, name, data)


def string(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def int_(v):
    return b"J" + struct.pack("<i", v)


def tensor(key, storage, numel, size, stride):
    """`key: _rebuild_tensor_v2(('storage', FloatStorage, storage, 'cpu', numel), 0, size, stride, ...)`"""
    tup = lambda vs: b"(" + b"".join(int_(v) for v in vs) + b"t"
    return (string(key) + b"ctorch._utils\n_rebuild_tensor_v2\n((" + string("storage")
            + b"ctorch\nFloatStorage\n" + string(storage) + string("cpu") + int_(numel) + b"tQ"
            + int_(0) + tup(size) + tup(stride) + b"\x89ccollections\nOrderedDict\n)Rq\x05tR")


def state_dict():
    return (b"\x80\x02ccollections\nOrderedDict\n)Rq\x00("
            + tensor("w", "0", 6, [2, 3], [3, 1]) + tensor("b", "1", 2, [2], [1]) + b"u.")


floats = lambda vs: b"".join(struct.pack("<f", v) for v in vs)

# Zip .pth (torch >= 1.6).
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
    z.writestr("archive/data.pkl", state_dict())
    z.writestr("archive/data/0", floats([0.5, -1, 2, 3, 4, 5]))
    z.writestr("archive/data/1", floats([0.1, 0.2]))
    z.writestr("archive/version", b"3\n")
out("pth", "zip.pth", buf.getvalue())

# Legacy .pth: magic, protocol, system info, the state dict, the storage keys, then the storages.
legacy = (b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19." + b"\x80\x02M\xe9\x03."
          + b"\x80\x02}q\x00(" + string("little_endian") + b"\x88u." + state_dict()
          + b"\x80\x02]q\x00(" + string("0") + string("1") + b"e."
          + struct.pack("<Q", 6) + floats([0.5, -1, 2, 3, 4, 5]) + struct.pack("<Q", 2) + floats([0.1, 0.2]))
out("pth", "legacy.pth", legacy)

# Safetensors with metadata.
header = {"__metadata__": {"effnet.format": "1"},
          "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "w": {"dtype": "F16", "shape": [2, 3], "data_offsets": [8, 20]}}
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
out("safetensors", "small.safetensors",
    struct.pack("<Q", len(h)) + h + floats([0.1, 0.2]) + struct.pack("<6e", 1, 2, 3, 4, 5, 6))

# Images.
from PIL import Image  # noqa: E402

img = Image.new("RGB", (8, 6))
img.putdata([(x * 30, y * 40, 7) for y in range(6) for x in range(8)])
for fmt, ext in [("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("TIFF", "tif"), ("WEBP", "webp")]:
    b = io.BytesIO()
    img.save(b, fmt)
    out("image", f"small.{ext}", b.getvalue())
b = io.BytesIO()
img.convert("LA").save(b, "PNG")
out("image", "gray_alpha.png", b.getvalue())


# Regressions: the hostile inputs the readers must refuse quickly and within bounded memory. The test suite
# replays them (crates/weights/tests/fuzz_corpus.rs, crates/data/tests/fuzz_corpus.rs) and runs the binary
# on them under a memory limit (crates/cli/tests/hostile.rs).
def regression(target, name, data):
    write("regressions", target, name, data)


def legacy_with(state_dict_pickle):
    return (b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19." + b"\x80\x02M\xe9\x03."
            + b"\x80\x02}q\x00(" + string("little_endian") + b"\x88u." + state_dict_pickle + b"\x80\x02]q\x00e.")


# "Billion laughs": each level a list of ten references to the one before, nine levels.
laughs = b"\x80\x02]q\x00" + b"".join(b"(" + bytes([ord("h"), i]) * 10 + b"lq" + bytes([i + 1]) for i in range(9)) + b"."
regression("pth", "billion_laughs.pth", legacy_with(laughs))
# A memo index of 2^31 - 1 (a dense memo would allocate gigabytes).
regression("pth", "huge_memo_index.pth", legacy_with(b"\x80\x02}r\xff\xff\xff\x7f."))


def zip_pth(name, size, stride, data, method):
    pickle = (b"\x80\x02}q\x00(" + string("w") + b"ctorch._utils\n_rebuild_tensor_v2\n((" + string("storage")
              + b"ctorch\nFloatStorage\n" + string("0") + string("cpu") + int_(len(data) // 4) + b"tQ" + int_(0)
              + b"(" + b"".join(b"\x8a\x08" + struct.pack("<Q", v) for v in size) + b"t"
              + b"(" + b"".join(b"\x8a\x09" + struct.pack("<Q", v) + b"\x00" for v in stride) + b"t"
              + b"\x89ccollections\nOrderedDict\n)Rq\x05tRu.")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        z.writestr("archive/data.pkl", pickle)
        z.writestr("archive/data/0", data)
    regression("pth", name, buf.getvalue())


# 4 bytes of storage viewed with stride 0 as 2^28 elements (1 GiB if materialised).
zip_pth("zero_stride.pth", [1 << 28], [0], floats([1.0]), zipfile.ZIP_STORED)
# Strides whose extent overflows 64 bits.
zip_pth("stride_overflow.pth", [2, 2], [1 << 63, 1 << 63], floats([0, 0, 0, 0]), zipfile.ZIP_STORED)
# A storage entry that deflates 4 MiB of zeros a thousandfold.
zip_pth("zip_bomb.pth", [1 << 20], [1], bytes(4 << 20), zipfile.ZIP_DEFLATED)

# A PNG header that claims 60000 x 60000 pixels (10.8 GB decoded) in 69 bytes.
import zlib  # noqa: E402


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


regression("image", "60000x60000.png", b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))
# A JPEG cut off two thirds of the way (the decoder would fill the rest with gray).
b = io.BytesIO()
big = Image.new("RGB", (64, 48))
big.putdata([(x * 4, y * 5, (x * y) % 256) for y in range(48) for x in range(64)])
big.save(b, "JPEG", quality=90)
jpeg = b.getvalue()
regression("image", "truncated.jpg", jpeg[: len(jpeg) * 2 // 3])

# TensorFlow checkpoint indexes: the seed is the index TensorFlow wrote for fixtures/tf_checkpoint; the
# regressions keep its footer but point the index block past the end, give a block a restart count larger
# than the block, and change one byte of a block (its checksum then fails).
with open(os.path.join(ROOT, "..", "fixtures", "tf_checkpoint", "model.ckpt.index"), "rb") as f:
    index = f.read()
out("tf_index", "tiny.index", index)


def varint(v):
    outb = bytearray()
    while v >= 0x80:
        outb.append((v & 0x7F) | 0x80)
        v >>= 7
    outb.append(v)
    return bytes(outb)


footer = bytearray(varint(0) + varint(0) + varint(len(index) * 4) + varint(100))
footer += bytes(40 - len(footer)) + index[-8:]
regression("tf_index", "index_past_the_end.index", index[:-48] + bytes(footer))
huge_restarts = bytearray(index)
huge_restarts[len(index) - 48 - 5 - 4:len(index) - 48 - 5] = struct.pack("<I", 0x7FFFFFFF)
regression("tf_index", "huge_restart_count.index", bytes(huge_restarts))
flipped = bytearray(index)
flipped[len(index) // 3] ^= 0x01
regression("tf_index", "checksum.index", bytes(flipped))
