#!/usr/bin/env python3
"""A small EfficientNet checkpoint written by TensorFlow itself, and TensorFlow's own logits for it, so that
effnet's tensor-bundle reader and its TF variable mapping are checked against TensorFlow, not against
themselves.

The network is a two-stage EfficientNet (TF block strings r1_k3_s11_e1_i32_o16_se0.25 and
r2_k3_s22_e6_i16_o24_se0.25, stem 32, head 1280, 10 classes, swish, TF "SAME" padding, BN epsilon 1e-3).
Its variables are named as the official `efficientnet_model.py` names them (Keras layer names in each
block's scope: conv2d, conv2d_1, depthwise_conv2d, tpu_batch_normalization{,_1,_2}, se/conv2d{,_1},
head/dense), and the checkpoint holds what official ones hold besides: an ExponentialMovingAverage of every
variable (which evaluation uses, so the logits here are computed with it), RMSProp slots and global_step.

    pip install tensorflow-cpu numpy
    python3 tools/tf_checkpoint_fixture.py   # writes fixtures/tf_checkpoint/
"""
import json, math, os, shutil, sys
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402  (only for the documented hash input)

ROOT = reference.ROOT
OUT = os.path.join(ROOT, "fixtures", "tf_checkpoint")
SCOPE = "efficientnet-tiny"
BLOCKS = "r1_k3_s11_e1_i32_o16_se0.25,r2_k3_s22_e6_i16_o24_se0.25"
# (kernel, stride, expand, in, out) per block after repeats, SE ratio 0.25 of the block input.
LAYERS = [(3, 1, 1, 32, 16), (3, 2, 6, 16, 24), (3, 1, 6, 24, 24)]
STEM, HEAD, CLASSES, EPS, RES = 32, 1280, 10, 1e-3, 64


def variables(rng):
    """name -> value, named as efficientnet_model.py's Keras layers are."""
    v = {}
    def conv(name, k, cin, cout):
        v[name + "/kernel"] = rng.normal(0, math.sqrt(2.0 / (k * k * cout)), (k, k, cin, cout))
    def bn(name, c):
        v[name + "/gamma"] = rng.uniform(0.5, 1.5, c)
        v[name + "/beta"] = rng.uniform(-0.1, 0.1, c)
        v[name + "/moving_mean"] = rng.uniform(-0.1, 0.1, c)
        v[name + "/moving_variance"] = rng.uniform(0.5, 1.5, c)
    conv(f"{SCOPE}/stem/conv2d", 3, 3, STEM)
    bn(f"{SCOPE}/stem/tpu_batch_normalization", STEM)
    for i, (k, s, e, cin, cout) in enumerate(LAYERS):
        p, mid, se = f"{SCOPE}/blocks_{i}", cin * e, max(1, int(cin * 0.25))
        convs, bns = iter(["conv2d", "conv2d_1"]), iter(["tpu_batch_normalization", "tpu_batch_normalization_1",
                                                          "tpu_batch_normalization_2"])
        if e != 1:
            conv(f"{p}/{next(convs)}", 1, cin, mid)
            bn(f"{p}/{next(bns)}", mid)
        v[f"{p}/depthwise_conv2d/depthwise_kernel"] = rng.normal(0, math.sqrt(2.0 / (k * k)), (k, k, mid, 1))
        bn(f"{p}/{next(bns)}", mid)
        conv(f"{p}/se/conv2d", 1, mid, se)
        v[f"{p}/se/conv2d/bias"] = rng.uniform(-0.1, 0.1, se)
        conv(f"{p}/se/conv2d_1", 1, se, mid)
        v[f"{p}/se/conv2d_1/bias"] = rng.uniform(-0.1, 0.1, mid)
        conv(f"{p}/{next(convs)}", 1, mid, cout)
        bn(f"{p}/{next(bns)}", cout)
    conv(f"{SCOPE}/head/conv2d", 1, LAYERS[-1][4], HEAD)
    bn(f"{SCOPE}/head/tpu_batch_normalization", HEAD)
    v[f"{SCOPE}/head/dense/kernel"] = rng.uniform(-0.5, 0.5, (HEAD, CLASSES))
    v[f"{SCOPE}/head/dense/bias"] = rng.uniform(-0.1, 0.1, CLASSES)
    return {k: np.asarray(x, np.float32) for k, x in v.items()}


def forward(w, x):
    """The official block order with TensorFlow's ops, on NHWC input."""
    def bn(y, name):
        return tf.nn.batch_normalization(y, w[name + "/moving_mean"], w[name + "/moving_variance"],
                                         w[name + "/beta"], w[name + "/gamma"], EPS)
    y = tf.nn.swish(bn(tf.nn.conv2d(x, w[f"{SCOPE}/stem/conv2d/kernel"], 2, "SAME"), f"{SCOPE}/stem/tpu_batch_normalization"))
    for i, (k, s, e, cin, cout) in enumerate(LAYERS):
        p, inputs = f"{SCOPE}/blocks_{i}", y
        convs, bns = iter(["conv2d", "conv2d_1"]), iter(["tpu_batch_normalization", "tpu_batch_normalization_1",
                                                          "tpu_batch_normalization_2"])
        if e != 1:
            y = tf.nn.swish(bn(tf.nn.conv2d(y, w[f"{p}/{next(convs)}/kernel"], 1, "SAME"), f"{p}/{next(bns)}"))
        y = tf.nn.depthwise_conv2d(y, w[f"{p}/depthwise_conv2d/depthwise_kernel"], [1, s, s, 1], "SAME")
        y = tf.nn.swish(bn(y, f"{p}/{next(bns)}"))
        pooled = tf.reduce_mean(y, [1, 2], keepdims=True)
        r = tf.nn.swish(tf.nn.conv2d(pooled, w[f"{p}/se/conv2d/kernel"], 1, "SAME") + w[f"{p}/se/conv2d/bias"])
        g = tf.sigmoid(tf.nn.conv2d(r, w[f"{p}/se/conv2d_1/kernel"], 1, "SAME") + w[f"{p}/se/conv2d_1/bias"])
        y = y * g
        y = bn(tf.nn.conv2d(y, w[f"{p}/{next(convs)}/kernel"], 1, "SAME"), f"{p}/{next(bns)}")
        if s == 1 and cin == cout:
            y = y + inputs
    y = tf.nn.swish(bn(tf.nn.conv2d(y, w[f"{SCOPE}/head/conv2d/kernel"], 1, "SAME"), f"{SCOPE}/head/tpu_batch_normalization"))
    y = tf.reduce_mean(y, [1, 2])
    return tf.matmul(y, w[f"{SCOPE}/head/dense/kernel"]) + w[f"{SCOPE}/head/dense/bias"]


def main():
    rng = np.random.default_rng(2019)
    raw = variables(rng)
    ema = {k: (x * 1.02 + rng.normal(0, 0.01, x.shape)).astype(np.float32) for k, x in raw.items()}
    ema = {k: np.abs(x) if k.endswith("moving_variance") else x for k, x in ema.items()}
    to_save = {k: tf.Variable(x) for k, x in raw.items()}
    to_save.update({k + "/ExponentialMovingAverage": tf.Variable(x) for k, x in ema.items()})
    to_save.update({k + "/RMSProp": tf.Variable(np.ones_like(x)) for k, x in raw.items() if "kernel" in k})
    to_save["global_step"] = tf.Variable(np.int64(12345))
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    saver = tf.compat.v1.train.Saver(var_list=to_save)
    saver.save(None, os.path.join(OUT, "model.ckpt"), write_meta_graph=False)
    # As in the official archives: the state file names the checkpoint relative to its folder.
    with open(os.path.join(OUT, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n')
    x = reference.hash_input(RES).transpose(1, 2, 0)[None].astype(np.float32)
    logits = forward({k: tf.constant(v) for k, v in ema.items()}, tf.constant(x)).numpy()[0]
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"generator": f"tools/tf_checkpoint_fixture.py (TensorFlow {tf.__version__})",
                   "blocks": BLOCKS, "classes": CLASSES, "bn_eps": EPS, "padding": "tf-same",
                   "input": {"kind": "hash", "resolution": RES}, "logits": [float(v) for v in logits]}, f, indent=1)
    print("wrote", OUT, sorted(os.listdir(OUT)), file=sys.stderr)


if __name__ == "__main__":
    main()
