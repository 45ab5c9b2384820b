#!/usr/bin/env python3
"""Fits the polynomial the AVX-512 sigmoid uses for 2^f on [0, 1) and prints its coefficients.

p(f) = 1 + c1 f + c2 f^2 + ... + c5 f^5, fitted for the smallest maximum relative error by Lawson's
iteratively reweighted least squares (which converges to the minimax fit), then rounded to f32 and
checked by evaluating it in f32 Horner form, as the kernel does, on 200001 points.

    python3 tools/exp2_poly.py
"""
import numpy as np

DEGREE = 5


def fit(degree=DEGREE, points=4000, iterations=300):
    f = np.linspace(0.0, 1.0, points)
    target = 2.0**f
    basis = np.stack([f**i for i in range(1, degree + 1)], 1)
    relative = 1.0 / target
    lawson = np.ones(points)
    for _ in range(iterations):
        w = lawson * relative
        coeffs, *_ = np.linalg.lstsq(basis * w[:, None], (target - 1.0) * w, rcond=None)
        err = (basis @ coeffs + 1.0 - target) / target
        lawson *= np.abs(err) ** 0.5 + 1e-20
        lawson /= lawson.sum() / points
    return coeffs.astype(np.float32), np.abs(err).max()


def f32_error(coeffs):
    f = np.linspace(0.0, 1.0, 200001).astype(np.float32)
    p = np.full_like(f, coeffs[-1])
    for c in coeffs[-2::-1]:
        p = (p * f + c).astype(np.float32)
    p = (p * f + np.float32(1.0)).astype(np.float32)
    exact = 2.0 ** f.astype(np.float64)
    return (np.abs(p.astype(np.float64) - exact) / exact).max()


if __name__ == "__main__":
    coeffs, fitted = fit()
    print("degree 5 down to 1:", ", ".join(repr(float(c)) for c in coeffs[::-1]))
    print(f"max relative error: fit {fitted:.3g}, f32 Horner {f32_error(coeffs):.3g}")
