"""Pure-numpy reference backend: the most obviously-correct implementation of every layer, forward and
backward, written for reading rather than speed. It is the oracle the frameworks are tested against and
imports no framework. float64 by default."""

from __future__ import annotations

import math
from typing import Any, Literal, cast

import numpy as np

from .. import layout, resample
from ..shapes import LayerInfo, adaptive_windows, avgpool_divisor, concat_axis, layer_taps, softmax_axis, tap_slices
from ..spec import (
    ELU,
    GELU,
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    Flatten,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    Identity,
    LeakyReLU,
    Linear,
    MaxPool2d,
    Normalization,
    ReLU,
    Rescaling,
    Sequential,
    Sigmoid,
    SiLU,
    Softmax,
    StochasticDepth,
    Tanh,
    Upsample,
    ZeroPad2d,
)

NAME = "numpy"

_NP_PAD_MODES: dict[str, Literal["constant", "reflect", "edge", "wrap"]] = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
}


class NumpyModel:
    """A callable model on NCHW numpy arrays. ``weights`` holds canonical arrays (torch layouts).

    Like a torch module it has a ``training`` flag (``train()`` / ``eval()``; False after ``build``): in
    training BatchNorm uses batch statistics and updates its running statistics, and Dropout draws masks
    from ``self.rng``."""

    def __init__(self, spec: Sequential, infos: list[LayerInfo], weights: dict[str, np.ndarray], dtype: str) -> None:
        self.xconv_spec = spec
        self.infos = infos
        self.dtype = dtype
        self.weights = {k: np.array(v, dtype=np.int64 if v.dtype.kind in "iu" else dtype) for k, v in weights.items()}
        self.training = False
        self.rng = np.random.default_rng(0)
        self._masks: dict[int, np.ndarray] = {}

    def train(self, mode: bool = True) -> NumpyModel:
        self.training = bool(mode)
        return self

    def eval(self) -> NumpyModel:
        return self.train(False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward_layers(x)[-1]

    def forward_layers(self, x: np.ndarray, update: bool = True) -> list[np.ndarray]:
        """The output of every node of the graph, in order (in training, BatchNorm running statistics are
        updated unless ``update`` is False)."""
        values: dict[int, np.ndarray] = {-1: np.asarray(x, dtype=self.dtype)}
        for info in self.infos:
            args = [values[i] for i in info.inputs]
            if info.is_join:
                values[info.index] = _join_forward(info, args)
            else:
                values[info.index] = _FORWARD[type(info.layer)](
                    info, self._params(info), args[0], _Mode(self, info, update)
                )
        return [values[info.index] for info in self.infos]

    def backward(self, x: np.ndarray, grad_output: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Gradients of sum(output * grad_output) with respect to the input and every trainable weight
        (canonical keys). Where a tensor feeds several nodes, the gradients from each add up. Uses the
        Dropout masks of the last forward pass; does not update statistics."""
        x = np.asarray(x, dtype=self.dtype)
        outs = self.forward_layers(x, update=False)
        values = {-1: x, **{info.index: out for info, out in zip(self.infos, outs)}}
        pending: dict[int, np.ndarray] = {self.infos[-1].index: np.asarray(grad_output, dtype=self.dtype)}
        grads: dict[str, np.ndarray] = {}
        for info in reversed(self.infos):
            g = pending.pop(info.index, None)
            if g is None:  # the output does not depend on this node
                g = np.zeros_like(values[info.index])
            args = [values[i] for i in info.inputs]
            if info.is_join:
                input_grads = _join_backward(info, args, g)
            else:
                gx, param_grads = _BACKWARD[type(info.layer)](
                    info, self._params(info), args[0], g, _Mode(self, info, False)
                )
                input_grads = [gx]
                for name, value in param_grads.items():
                    grads[f"{info.key}.{name}"] = value
            for source, gi in zip(info.inputs, input_grads):
                _accumulate(pending, source, gi)
        gx = pending.get(-1, np.zeros_like(x))
        return gx, {k: grads[k] for info in self.infos for k in (f"{info.key}.{n}" for n in info.trainable)}

    def _params(self, info: LayerInfo) -> dict[str, np.ndarray]:
        return {name: self.weights[f"{info.key}.{name}"] for name in info.params}


def _accumulate(pending: dict[int, np.ndarray], source: int, g: np.ndarray) -> None:
    """Where a tensor feeds several nodes, its gradient is the sum of what each of them sends back."""
    pending[source] = g if source not in pending else pending[source] + g


def _join_forward(info: LayerInfo, args: list[np.ndarray]) -> np.ndarray:
    kind = info.kind
    if kind == "Concat":
        return np.concatenate(args, axis=concat_axis(info))
    if kind == "Subtract":
        difference: np.ndarray = args[0] - args[1]
        return difference
    out = args[0]
    for a in args[1:]:
        out = out + a if kind == "Add" else out * a
    return out


def _unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``g`` over the axes along which an input of ``shape`` was broadcast."""
    axes = tuple(i for i, (a, b) in enumerate(zip(g.shape, shape)) if b == 1 and a != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _join_backward(info: LayerInfo, args: list[np.ndarray], g: np.ndarray) -> list[np.ndarray]:
    kind = info.kind
    if kind == "Concat":
        axis = concat_axis(info)
        bounds = np.cumsum([a.shape[axis] for a in args])[:-1]
        return list(np.split(g, bounds, axis=axis))
    if kind == "Add":
        return [_unbroadcast(g, a.shape) for a in args]
    if kind == "Subtract":
        return [_unbroadcast(g, args[0].shape), _unbroadcast(-g, args[1].shape)]
    out = []
    for i, a in enumerate(args):
        others = np.ones((), dtype=g.dtype)
        for j, b in enumerate(args):
            if j != i:
                others = others * b
        out.append(_unbroadcast(g * others, a.shape))
    return out


class _Mode:
    """What a layer needs to know about the model's state: training or not, and where its masks and
    statistics live."""

    def __init__(self, model: NumpyModel, info: LayerInfo, update: bool) -> None:
        self.model, self.info, self.update = model, info, update

    @property
    def training(self) -> bool:
        return self.model.training

    def mask(self, shape: tuple[int, ...], p: float, dtype: Any) -> np.ndarray:
        """Dropout's keep-mask scaled by 1 / (1 - p): drawn on a forward pass, reused by the backward pass."""
        if self.update or self.info.index not in self.model._masks:
            keep = self.model.rng.random(shape) >= p
            scale = np.asarray(0.0 if p == 1 else 1.0 / (1.0 - p), dtype=dtype)
            self.model._masks[self.info.index] = keep.astype(dtype) * scale
        return self.model._masks[self.info.index]


# ---- Conv2d: explicit pad, then a sum over kernel taps of strided slices ----


def _pad(info: LayerInfo, x: np.ndarray) -> np.ndarray:
    assert info.padding is not None  # a conv's explicit padding, resolved by shape inference
    (t, b), (l, r) = info.padding
    mode = _NP_PAD_MODES[cast(Conv2d, info.layer).padding_mode]
    padded: np.ndarray = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), mode=mode)
    return padded


def _conv_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: _Mode) -> np.ndarray:
    layer: Conv2d = info.layer  # type: ignore[assignment]
    w, g = p["weight"], layer.groups
    xp = _pad(info, x)
    n = x.shape[0]
    cin, cout = layer.in_channels // g, layer.out_channels // g
    out = np.zeros((n, *info.output_shape), dtype=x.dtype)
    for group in range(g):
        xs = xp[:, group * cin : (group + 1) * cin]
        ws = w[group * cout : (group + 1) * cout]
        for i, j, rows, cols in layer_taps(info):
            out[:, group * cout : (group + 1) * cout] += np.einsum(
                "nchw,oc->nohw", xs[:, :, rows, cols], ws[:, :, i, j]
            )
    if "bias" in p:
        out += p["bias"][None, :, None, None]
    return out


def _conv_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: _Mode) -> Any:
    layer: Conv2d = info.layer  # type: ignore[assignment]
    w, g = p["weight"], layer.groups
    xp = _pad(info, x)
    cin, cout = layer.in_channels // g, layer.out_channels // g
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    for group in range(g):
        ci, co = slice(group * cin, (group + 1) * cin), slice(group * cout, (group + 1) * cout)
        for i, j, rows, cols in layer_taps(info):
            gw[co, :, i, j] += np.einsum("nohw,nchw->oc", go[:, co], xp[:, ci, rows, cols])
            gxp[:, ci, rows, cols] += np.einsum("nohw,oc->nchw", go[:, co], w[co, :, i, j])
    # Un-pad: every padded position came from one input position (or from a zero), so gradients add up there.
    (t, b), (l, r) = info.padding  # type: ignore[misc]
    _, h, wd = x.shape[1:]
    if layer.padding_mode == "zeros":
        gx = gxp[:, :, t : t + h, l : l + wd]
    else:
        rows_src = layout.pad_indices(h, t, b, layer.padding_mode)
        cols_src = layout.pad_indices(wd, l, r, layer.padding_mode)
        gx_rows = np.zeros((*gxp.shape[:2], h, gxp.shape[3]), dtype=gxp.dtype)
        np.add.at(gx_rows, (slice(None), slice(None), rows_src), gxp)  # type: ignore[arg-type]  # numpy accepts slices
        gx = np.zeros(x.shape, dtype=gxp.dtype)
        np.add.at(gx, (slice(None), slice(None), slice(None), cols_src), gx_rows)  # type: ignore[arg-type]  # numpy accepts slices
    grads = {"weight": gw}
    if "bias" in p:
        grads["bias"] = go.sum(axis=(0, 2, 3))
    return gx, grads


def _linear_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: _Mode) -> np.ndarray:
    y = x @ p["weight"].T
    out: np.ndarray = y + p["bias"] if "bias" in p else y
    return out


def _linear_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: _Mode) -> Any:
    grads = {"weight": go.T @ x}
    if "bias" in p:
        grads["bias"] = go.sum(axis=0)
    return go @ p["weight"], grads


# ---- pooling: explicit pad (-inf for max, zeros for average), then the kernel's taps as strided slices ----


def _pool_pad(info: LayerInfo, x: np.ndarray, value: float) -> np.ndarray:
    (t, b), (l, r) = info.padding  # type: ignore[misc]
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=value)


def _unpad(info: LayerInfo, gxp: np.ndarray) -> np.ndarray:
    (t, _), (l, _) = info.padding  # type: ignore[misc]
    _, h, w = info.input_shape
    return gxp[:, :, t : t + h, l : l + w]


def _maxpool_forward(info: LayerInfo, p: Any, x: np.ndarray, mode: _Mode) -> np.ndarray:
    xp = _pool_pad(info, x, -np.inf)
    out: np.ndarray = np.stack([xp[:, :, r, c] for _, _, r, c in layer_taps(info)]).max(axis=0)
    return out


def _maxpool_backward(info: LayerInfo, p: Any, x: np.ndarray, go: np.ndarray, mode: _Mode) -> Any:
    # The gradient goes to the first maximum of each window in row-major tap order (torch's and TF's rule).
    xp = _pool_pad(info, x, -np.inf)
    taps = [(r, c) for _, _, r, c in layer_taps(info)]
    winner = np.stack([xp[:, :, r, c] for r, c in taps]).argmax(axis=0)
    gxp = np.zeros_like(xp)
    for t, (r, c) in enumerate(taps):
        gxp[:, :, r, c] += np.where(winner == t, go, 0)
    return _unpad(info, gxp), {}


def _avgpool_forward(info: LayerInfo, p: Any, x: np.ndarray, mode: _Mode) -> np.ndarray:
    xp = _pool_pad(info, x, 0.0)
    total = sum(xp[:, :, r, c] for _, _, r, c in layer_taps(info))
    return total / avgpool_divisor(info).astype(x.dtype)


def _avgpool_backward(info: LayerInfo, p: Any, x: np.ndarray, go: np.ndarray, mode: _Mode) -> Any:
    xp = _pool_pad(info, x, 0.0)
    share = go / avgpool_divisor(info).astype(x.dtype)
    gxp = np.zeros_like(xp)
    for _, _, r, c in layer_taps(info):
        gxp[:, :, r, c] += share
    return _unpad(info, gxp), {}


def _adaptive_forward(info: LayerInfo, p: Any, x: np.ndarray, mode: _Mode) -> np.ndarray:
    _, h, w = info.input_shape
    _, ho, wo = info.output_shape
    out = np.empty((x.shape[0], *info.output_shape), dtype=x.dtype)
    for i, (r0, r1) in enumerate(adaptive_windows(h, ho)):
        for j, (c0, c1) in enumerate(adaptive_windows(w, wo)):
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return out


def _adaptive_backward(info: LayerInfo, p: Any, x: np.ndarray, go: np.ndarray, mode: _Mode) -> Any:
    _, h, w = info.input_shape
    _, ho, wo = info.output_shape
    gx = np.zeros_like(x)
    for i, (r0, r1) in enumerate(adaptive_windows(h, ho)):
        for j, (c0, c1) in enumerate(adaptive_windows(w, wo)):
            gx[:, :, r0:r1, c0:c1] += go[:, :, i : i + 1, j : j + 1] / ((r1 - r0) * (c1 - c0))
    return gx, {}


# ---- ConvTranspose2d: each input pixel adds its kernel-weighted copy at stride s into the full output, of which
# padding crops both ends; Upsample: out = A_h x A_w^T with the per-axis matrices of xconv.resample ----


def _convt_parts(info: LayerInfo, x: np.ndarray) -> tuple[Any, list[Any], tuple[int, ...]]:
    """(layer, per-tap (i, j, rows, cols) slices of the full output, the full output's shape)."""
    layer: ConvTranspose2d = info.layer  # type: ignore[assignment]
    taps = tap_slices(layer.kernel_size, layer.stride, layer.dilation, info.input_shape[1:])  # type: ignore[arg-type]
    full = [
        (n - 1) * s + d * (k - 1) + 1 + op
        for n, s, d, k, op in zip(
            info.input_shape[1:], layer.stride, layer.dilation, layer.kernel_size, layer.output_padding
        )
    ]
    return layer, taps, (x.shape[0], layer.out_channels, *full)


def _convt_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Any) -> np.ndarray:
    layer, taps, full = _convt_parts(info, x)
    g, w = layer.groups, p["weight"]
    cin, cout = layer.in_channels // g, layer.out_channels // g
    y = np.zeros(full, dtype=x.dtype)
    for group in range(g):
        ci, co = slice(group * cin, (group + 1) * cin), slice(group * cout, (group + 1) * cout)
        for i, j, rows, cols in taps:
            y[:, co, rows, cols] += np.einsum("nchw,co->nohw", x[:, ci], w[ci, :, i, j])
    (ph, pw), (ho, wo) = layer.padding, info.output_shape[1:]
    y = y[:, :, ph : ph + ho, pw : pw + wo]
    return y + p["bias"][None, :, None, None] if "bias" in p else y


def _convt_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Any) -> Any:
    layer, taps, full = _convt_parts(info, x)
    g, w = layer.groups, p["weight"]
    cin, cout = layer.in_channels // g, layer.out_channels // g
    (ph, pw), (ho, wo) = layer.padding, info.output_shape[1:]
    gfull = np.zeros(full, dtype=go.dtype)
    gfull[:, :, ph : ph + ho, pw : pw + wo] = go
    gx, gw = np.zeros_like(x), np.zeros_like(w)
    for group in range(g):
        ci, co = slice(group * cin, (group + 1) * cin), slice(group * cout, (group + 1) * cout)
        for i, j, rows, cols in taps:
            gx[:, ci] += np.einsum("nohw,co->nchw", gfull[:, co, rows, cols], w[ci, :, i, j])
            gw[ci, :, i, j] += np.einsum("nchw,nohw->co", x[:, ci], gfull[:, co, rows, cols])
    grads = {"weight": gw}
    if "bias" in p:
        grads["bias"] = go.sum(axis=(0, 2, 3))
    return gx, grads


def _upsample_matrices(info: LayerInfo, dtype: Any) -> list[np.ndarray]:
    hw_in, hw_out = info.input_shape[1:], info.output_shape[1:]
    return [resample.matrix(t, n).astype(dtype) for t, n in zip(resample.layer_taps(info.layer, hw_in, hw_out), hw_in)]  # type: ignore[arg-type]


def _upsample_forward(info: LayerInfo, p: Any, x: np.ndarray, mode: Any) -> np.ndarray:
    a_h, a_w = _upsample_matrices(info, x.dtype)
    out: np.ndarray = np.einsum("oh,nchw,pw->ncop", a_h, x, a_w)
    return out


def _upsample_backward(info: LayerInfo, p: Any, x: np.ndarray, go: np.ndarray, mode: Any) -> Any:
    a_h, a_w = _upsample_matrices(info, x.dtype)
    return np.einsum("oh,ncop,pw->nchw", a_h, go, a_w), {}


# ---- BatchNorm: torch's definition (biased batch variance to normalise, unbiased into running_var) ----


def _bn_axes(x: np.ndarray) -> tuple[int, ...]:
    return (0, 2, 3) if x.ndim == 4 else (0,)


def _bn_shape(x: np.ndarray) -> tuple[int, ...]:
    return (1, -1, 1, 1) if x.ndim == 4 else (1, -1)


def _bn_stats(
    info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: _Mode
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(mean, variance, from the batch?) that normalise ``x``."""
    layer = info.layer
    if (mode.training and not layer.frozen) or not layer.track_running_stats:  # type: ignore[attr-defined]
        axes = _bn_axes(x)
        return x.mean(axis=axes), x.var(axis=axes), True
    return p["running_mean"], p["running_var"], False


def _bn_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: _Mode) -> np.ndarray:
    layer = info.layer
    mean, var, batch = _bn_stats(info, p, x, mode)
    if batch and mode.training and layer.track_running_stats and mode.update:  # type: ignore[attr-defined]
        n = x.size // x.shape[1]
        if n < 2:
            raise ValueError(f"BatchNorm: expected more than 1 value per channel when training, got {n}")
        p["num_batches_tracked"][...] += 1
        m = layer.momentum  # type: ignore[attr-defined]
        f = 1.0 / int(p["num_batches_tracked"]) if m is None else m
        p["running_mean"][...] = (1 - f) * p["running_mean"] + f * mean
        p["running_var"][...] = (1 - f) * p["running_var"] + f * var * (n / (n - 1))
    shape = _bn_shape(x)
    y: np.ndarray = (x - mean.reshape(shape)) / np.sqrt(var + layer.eps).reshape(shape)  # type: ignore[attr-defined]
    if "weight" in p:
        y = y * p["weight"].reshape(shape)
    if "bias" in p:
        y = y + p["bias"].reshape(shape)
    return y


def _bn_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: _Mode) -> Any:
    layer = info.layer
    mean, var, batch = _bn_stats(info, p, x, mode)
    shape, axes = _bn_shape(x), _bn_axes(x)
    invstd = (1.0 / np.sqrt(var + layer.eps)).reshape(shape)  # type: ignore[attr-defined]
    xhat = (x - mean.reshape(shape)) * invstd
    gxhat = go * p["weight"].reshape(shape) if "weight" in p else go
    if batch:  # mean and variance depend on x too
        n = x.size // x.shape[1]
        gx = (
            invstd
            / n
            * (n * gxhat - gxhat.sum(axis=axes).reshape(shape) - xhat * (gxhat * xhat).sum(axis=axes).reshape(shape))
        )
    else:
        gx = gxhat * invstd
    grads = {}
    if "weight" in p:
        grads["weight"] = (go * xhat).sum(axis=axes)
    if "bias" in p:
        grads["bias"] = go.sum(axis=axes)
    return gx, grads


# ---- Dropout and activations ----


def _dropout_forward(info: LayerInfo, p: Any, x: np.ndarray, mode: _Mode) -> np.ndarray:
    if not mode.training or info.layer.p == 0:  # type: ignore[attr-defined]
        return x
    return x * mode.mask(x.shape, info.layer.p, x.dtype)  # type: ignore[attr-defined]


def _dropout_backward(info: LayerInfo, p: Any, x: np.ndarray, go: np.ndarray, mode: _Mode) -> Any:
    if not mode.training or info.layer.p == 0:  # type: ignore[attr-defined]
        return go, {}
    return go * mode.mask(x.shape, info.layer.p, x.dtype), {}  # type: ignore[attr-defined]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(x))
        out: np.ndarray = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return out


_erf = np.frompyfunc(math.erf, 1, 1)
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def _gelu(info: LayerInfo, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gelu(x), gelu'(x))"""
    if info.layer.approximate == "tanh":  # type: ignore[attr-defined]
        inner = _SQRT_2_OVER_PI * (x + 0.044715 * x**3)
        t = np.tanh(inner)
        y = 0.5 * x * (1 + t)
        return y, 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x**2)
    cdf = 0.5 * (1 + np.asarray(_erf(x / math.sqrt(2))).astype(x.dtype))
    pdf = np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)
    return x * cdf, cdf + x * pdf


def _softmax_forward(info: LayerInfo, x: np.ndarray) -> np.ndarray:
    axis = softmax_axis(info)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    out: np.ndarray = e / e.sum(axis=axis, keepdims=True)
    return out


def _elu(info: LayerInfo, x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.where(x > 0, x, info.layer.alpha * np.expm1(np.minimum(x, 0)))  # type: ignore[attr-defined]


_FORWARD: dict[type, Any] = {
    Conv2d: _conv_forward,
    ReLU: lambda info, p, x, mode: np.maximum(x, 0),
    Flatten: lambda info, p, x, mode: (
        x.transpose(0, 2, 3, 1) if info.layer.channels_last and x.ndim == 4 else x
    ).reshape(x.shape[0], -1),
    Linear: _linear_forward,
    MaxPool2d: _maxpool_forward,
    AvgPool2d: _avgpool_forward,
    AdaptiveAvgPool2d: _adaptive_forward,
    BatchNorm2d: _bn_forward,
    BatchNorm1d: _bn_forward,
    Dropout: _dropout_forward,
    LeakyReLU: lambda info, p, x, mode: np.where(x > 0, x, x * info.layer.negative_slope),
    Sigmoid: lambda info, p, x, mode: _sigmoid(x),
    Tanh: lambda info, p, x, mode: np.tanh(x),
    GELU: lambda info, p, x, mode: _gelu(info, x)[0],
    ELU: lambda info, p, x, mode: _elu(info, x),
    SiLU: lambda info, p, x, mode: x * _sigmoid(x),
    Softmax: lambda info, p, x, mode: _softmax_forward(info, x),
    Identity: lambda info, p, x, mode: x,
    ZeroPad2d: lambda info, p, x, mode: np.pad(x, ((0, 0), (0, 0), *info.padding)),
    Hardtanh: lambda info, p, x, mode: np.clip(x, info.layer.min_val, info.layer.max_val),
    Hardsigmoid: lambda info, p, x, mode: np.minimum(np.maximum(x + 3, 0), 6) / 6,
    Hardswish: lambda info, p, x, mode: x * np.minimum(np.maximum(x + 3, 0), 6) / 6,
    StochasticDepth: lambda info, p, x, mode: _stochastic_depth(info, x, mode),
    Rescaling: lambda info, p, x, mode: x * _per_channel(info.layer.scale, x) + _per_channel(info.layer.offset, x),
    Normalization: lambda info, p, x, mode: (x - _per_channel(p["mean"], x)) / _norm_denominator(p, x),
    ConvTranspose2d: _convt_forward,
    Upsample: _upsample_forward,
}


def _softmax_backward(info: LayerInfo, x: np.ndarray, go: np.ndarray) -> np.ndarray:
    y = _softmax_forward(info, x)
    out: np.ndarray = y * (go - (go * y).sum(axis=softmax_axis(info), keepdims=True))
    return out


def _silu_backward(x: np.ndarray, go: np.ndarray) -> np.ndarray:
    s = _sigmoid(x)
    out: np.ndarray = go * s * (1 + x * (1 - s))
    return out


_BACKWARD: dict[type, Any] = {
    Conv2d: _conv_backward,
    ReLU: lambda info, p, x, go, mode: (go * (x > 0), {}),
    Flatten: lambda info, p, x, go, mode: (
        (
            go.reshape(x.shape[0], x.shape[2], x.shape[3], x.shape[1]).transpose(0, 3, 1, 2)
            if info.layer.channels_last and x.ndim == 4
            else go.reshape(x.shape)
        ),
        {},
    ),
    Linear: _linear_backward,
    MaxPool2d: _maxpool_backward,
    AvgPool2d: _avgpool_backward,
    AdaptiveAvgPool2d: _adaptive_backward,
    BatchNorm2d: _bn_backward,
    BatchNorm1d: _bn_backward,
    Dropout: _dropout_backward,
    LeakyReLU: lambda info, p, x, go, mode: (go * np.where(x > 0, 1, info.layer.negative_slope).astype(x.dtype), {}),
    Sigmoid: lambda info, p, x, go, mode: (go * _sigmoid(x) * (1 - _sigmoid(x)), {}),
    Tanh: lambda info, p, x, go, mode: (go * (1 - np.tanh(x) ** 2), {}),
    GELU: lambda info, p, x, go, mode: (go * _gelu(info, x)[1], {}),
    ELU: lambda info, p, x, go, mode: (go * np.where(x > 0, 1, _elu(info, x) + info.layer.alpha).astype(x.dtype), {}),
    SiLU: lambda info, p, x, go, mode: (_silu_backward(x, go), {}),
    Softmax: lambda info, p, x, go, mode: (_softmax_backward(info, x, go), {}),
    Identity: lambda info, p, x, go, mode: (go, {}),
    ZeroPad2d: lambda info, p, x, go, mode: (_unpad(info, go), {}),
    # torch's rules, boundaries included: hardtanh and hardsigmoid pass gradients strictly inside their ramp;
    # hardswish's is x / 3 + 1/2 on [-3, 3]
    Hardtanh: lambda info, p, x, go, mode: (go * ((x > info.layer.min_val) & (x < info.layer.max_val)), {}),
    Hardsigmoid: lambda info, p, x, go, mode: (go * ((x > -3) & (x < 3)) / 6, {}),
    Hardswish: lambda info, p, x, go, mode: (
        go * np.where(x < -3, 0, np.where(x <= 3, x / 3 + 0.5, 1)).astype(x.dtype),
        {},
    ),
    StochasticDepth: lambda info, p, x, go, mode: (_stochastic_depth(info, go, mode, like=x), {}),
    Rescaling: lambda info, p, x, go, mode: (go * _per_channel(info.layer.scale, x), {}),
    Normalization: lambda info, p, x, go, mode: (go / _norm_denominator(p, x), {}),
    ConvTranspose2d: _convt_backward,
    Upsample: _upsample_backward,
}

from .numpy_channels import BACKWARD as _CHANNEL_BACKWARD
from .numpy_channels import FORWARD as _CHANNEL_FORWARD

_FORWARD.update(_CHANNEL_FORWARD)
_BACKWARD.update(_CHANNEL_BACKWARD)

#: Keras' backend epsilon, the floor of Normalization's standard deviation
NORMALIZATION_FLOOR = 1e-7


def _per_channel(value: Any, x: np.ndarray) -> np.ndarray:
    """A number or one number per channel, shaped to broadcast over an NCHW (or (N, F)) batch."""
    v = np.asarray(value, dtype=x.dtype)
    return v.reshape((1, -1) + (1,) * (x.ndim - 2)) if v.ndim == 1 else v


def _norm_denominator(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.maximum(
        np.sqrt(_per_channel(p["variance"], x)), np.asarray(NORMALIZATION_FLOOR, dtype=x.dtype)
    )
    return out


def _stochastic_depth(info: LayerInfo, x: np.ndarray, mode: _Mode, like: np.ndarray | None = None) -> np.ndarray:
    """Multiply by the per-sample (or whole-batch) keep mask scaled by 1 / (1 - p), in training only."""
    layer = info.layer
    if not mode.training or layer.p == 0:  # type: ignore[attr-defined]
        return x
    ref = x if like is None else like
    shape = (ref.shape[0] if layer.mode == "row" else 1,) + (1,) * (ref.ndim - 1)  # type: ignore[attr-defined]
    return x * mode.mask(shape, layer.p, ref.dtype)  # type: ignore[attr-defined]


def build(spec: Sequential, infos: list[LayerInfo], weights: dict[str, np.ndarray], dtype: str) -> NumpyModel:
    return NumpyModel(spec, infos, weights, dtype)


def owns_model(obj: Any) -> bool:
    return isinstance(obj, NumpyModel)


def owns_tensor(obj: Any) -> bool:
    return False


def spec_of(model: NumpyModel) -> Sequential | None:
    return model.xconv_spec


def dtype_of(model: NumpyModel) -> str:
    return model.dtype


def get_weights(model: NumpyModel, infos: list[LayerInfo]) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in model.weights.items()}


def set_weights(model: NumpyModel, infos: list[LayerInfo], weights: dict[str, np.ndarray]) -> None:
    for k, v in weights.items():
        model.weights[k] = np.array(v, dtype=np.int64 if v.dtype.kind in "iu" else model.dtype)


def permute(x: Any, perm: tuple[int, ...]) -> Any:
    return np.transpose(x, perm)


def forward(model: NumpyModel, x: np.ndarray) -> np.ndarray:
    """Inference (running statistics, no dropout), whatever the model's mode."""
    was = model.training
    model.eval()
    try:
        return model(x)
    finally:
        model.train(was)


def forward_training(model: NumpyModel, x: np.ndarray, output: str | None = None) -> np.ndarray:
    """One training-mode call (BatchNorm on batch statistics), the running statistics left as they were."""
    was = model.training
    model.train()
    try:
        return model.forward_layers(x, update=False)[-1]
    finally:
        model.train(was)


def trace(
    model: NumpyModel, x: np.ndarray, upstream: np.ndarray, training: bool = False
) -> tuple[list[np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """Every layer's output, and the gradients of sum(output * upstream) w.r.t. the input and every trainable
    weight, in inference or (``training``) training mode; in training the running statistics are updated
    once, as by one framework call."""
    was = model.training
    model.train(training)
    try:
        outs = model.forward_layers(x)
        gx, grads = model.backward(x, upstream)
    finally:
        model.train(was)
    return outs, gx, grads
