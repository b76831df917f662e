"""Layout arithmetic between PyTorch (NCHW, OIHW, (out, in), C,H,W flatten) and Keras (NHWC, HWIO, (in, out),
H,W,C flatten), and TensorFlow's 'same' padding rule. Every layout transform in xconv lives here."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "same_padding",
    "oihw_to_hwio",
    "hwio_to_oihw",
    "flatten_permutation",
    "linear_to_dense",
    "dense_to_linear",
    "to_nhwc",
    "to_nchw",
]


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's 'same' rule on one axis: (before, after), the odd pixel after.

    total = max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
    """
    extent = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def oihw_to_hwio(w: np.ndarray) -> np.ndarray:
    """Torch conv kernel (out, in/groups, kh, kw) -> Keras kernel (kh, kw, in/groups, out)."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def hwio_to_oihw(w: np.ndarray) -> np.ndarray:
    """Keras conv kernel (kh, kw, in/groups, out) -> torch kernel (out, in/groups, kh, kw)."""
    return np.ascontiguousarray(w.transpose(3, 2, 0, 1))


def flatten_permutation(source: tuple[int, ...] | None) -> np.ndarray | None:
    """For features flattened from a (C, H, W) map: ``perm[j]`` is the C,H,W (torch) flat index of the j-th
    H,W,C (Keras) flat index. ``None`` when the two orders coincide (flat input, C == 1 or H*W == 1)."""
    if source is None:
        return None
    c, h, w = source
    if c == 1 or h * w == 1:
        return None
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def linear_to_dense(w: np.ndarray, source: tuple[int, ...] | None) -> np.ndarray:
    """Torch Linear weight (out, in) in C,H,W input order -> Keras Dense kernel (in, out) in H,W,C order."""
    perm = flatten_permutation(source)
    if perm is not None:
        w = w[:, perm]
    return np.ascontiguousarray(w.T)


def dense_to_linear(kernel: np.ndarray, source: tuple[int, ...] | None) -> np.ndarray:
    """Inverse of :func:`linear_to_dense`."""
    w = kernel.T
    perm = flatten_permutation(source)
    if perm is not None:
        out = np.empty_like(w)
        out[:, perm] = w
        return out
    return np.ascontiguousarray(w)


_TO_NHWC = (0, 2, 3, 1)
_TO_NCHW = (0, 3, 1, 2)


def _permute(x: Any, perm: tuple[int, ...], what: str) -> Any:
    if isinstance(x, np.ndarray):
        _check_4d(x.ndim, what)
        return np.ascontiguousarray(x.transpose(perm))
    from .backends import backend_of_tensor  # lazy: no framework import unless a tensor is passed

    backend = backend_of_tensor(x)
    if backend is None:
        raise TypeError(f"{what}: expected a numpy array, torch tensor or TensorFlow tensor. Received: {type(x)!r}")
    _check_4d(len(x.shape), what)
    return backend.permute(x, perm)


def _check_4d(ndim: int, what: str) -> None:
    if ndim != 4:
        from .errors import XconvError

        raise XconvError(f"{what}: expected a 4-D batch (N, ., ., .). Received: an array with {ndim} dimensions")


def to_nhwc(x: Any) -> Any:
    """NCHW -> NHWC for a numpy array, torch tensor or TF tensor; returns the same kind."""
    return _permute(x, _TO_NHWC, "to_nhwc")


def to_nchw(x: Any) -> Any:
    """NHWC -> NCHW for a numpy array, torch tensor or TF tensor; returns the same kind."""
    return _permute(x, _TO_NCHW, "to_nchw")


def pad_indices(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """Source index of each position of an axis of ``size`` padded by (before, after) in a torch padding mode
    other than zeros: 'reflect' (mirror without the edge), 'replicate' (repeat the edge), 'circular' (wrap).
    Gathering these indices pads exactly as ``torch.nn.functional.pad`` does."""
    i = np.arange(-before, size + after)
    if mode == "replicate":
        return np.clip(i, 0, size - 1)
    if mode == "circular":
        return np.mod(i, size)
    if mode == "reflect":
        period = 2 * (size - 1) if size > 1 else 1
        i = np.mod(i, period)
        return np.where(i < size, i, period - i)
    raise ValueError(f"pad_indices: unknown mode {mode!r}")


def features_to_chw_order(y: np.ndarray, source: tuple[int, ...] | None) -> np.ndarray:
    """Keras features (N, F) flattened in H,W,C order from a (C, H, W) map -> the same features in C,H,W order."""
    perm = flatten_permutation(source)
    if perm is None:
        return y
    out = np.empty_like(y)
    out[:, perm] = y
    return out


def vector_to_keras(v: np.ndarray, source: tuple[int, ...] | None) -> np.ndarray:
    """A per-feature vector (BatchNorm1d after Flatten) in C,H,W feature order -> H,W,C order."""
    perm = flatten_permutation(source)
    return v if perm is None else np.ascontiguousarray(v[perm])


def vector_from_keras(v: np.ndarray, source: tuple[int, ...] | None) -> np.ndarray:
    """Inverse of :func:`vector_to_keras`."""
    perm = flatten_permutation(source)
    if perm is None:
        return v
    out = np.empty_like(v)
    out[perm] = v
    return out


def avgpool_counts(size: int, out: int, k: int, s: int, p: int, count_include_pad: bool) -> np.ndarray:
    """Per output position along one axis, how many positions torch's AvgPool2d divides by: the window
    [o*s - p, o*s - p + k) cut at the padded input's end (size + p), and also at the input's own edges unless
    ``count_include_pad``. The divisor of a 2-D window is the product of the two axes' counts."""
    starts = np.arange(out) * s - p
    ends = np.minimum(starts + k, size + p)
    if not count_include_pad:
        starts, ends = np.maximum(starts, 0), np.minimum(ends, size)
    return (ends - starts).astype(np.int64)


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """torch's AdaptiveAvgPool windows along one axis: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]
