"""Pure-numpy reference backend: the most obviously-correct implementation of every layer, forward and
backward, written for reading rather than speed. It is the oracle the frameworks are tested against and
imports no framework. float64 by default."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import layout
from ..shapes import LayerInfo
from ..spec import Conv2d, Flatten, Linear, ReLU, Sequential

NAME = "numpy"

_NP_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


class NumpyModel:
    """A callable model on NCHW numpy arrays. ``weights`` holds canonical arrays (torch layouts)."""

    def __init__(self, spec: Sequential, infos: list[LayerInfo], weights: dict[str, np.ndarray], dtype: str) -> None:
        self.xconv_spec = spec
        self.infos = infos
        self.dtype = dtype
        self.weights = {k: np.array(v, dtype=dtype) for k, v in weights.items()}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward_layers(x)[-1]

    def forward_layers(self, x: np.ndarray) -> list[np.ndarray]:
        """The output of every layer, in order."""
        outs = []
        x = np.asarray(x, dtype=self.dtype)
        for info in self.infos:
            x = _FORWARD[type(info.layer)](info, self._params(info), x)
            outs.append(x)
        return outs

    def backward(self, x: np.ndarray, grad_output: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Gradients of sum(output * grad_output) with respect to the input and every weight (canonical keys)."""
        x = np.asarray(x, dtype=self.dtype)
        inputs = [x, *self.forward_layers(x)[:-1]]
        g = np.asarray(grad_output, dtype=self.dtype)
        grads: dict[str, np.ndarray] = {}
        for info, layer_input in reversed(list(zip(self.infos, inputs))):
            g, param_grads = _BACKWARD[type(info.layer)](info, self._params(info), layer_input, g)
            for name, value in param_grads.items():
                grads[f"{info.index}.{name}"] = value
        return g, {k: grads[k] for k in self.weights}

    def _params(self, info: LayerInfo) -> dict[str, np.ndarray]:
        return {name: self.weights[f"{info.index}.{name}"] for name in info.params}


# ---- Conv2d: explicit pad, then a sum over kernel taps of strided slices ----

def _pad(info: LayerInfo, x: np.ndarray) -> np.ndarray:
    (t, b), (l, r) = info.padding  # type: ignore[misc]
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), mode=_NP_PAD_MODES[info.layer.padding_mode])  # type: ignore[attr-defined]


def _taps(info: LayerInfo):  # type: ignore[no-untyped-def]
    """For each kernel tap (i, j): the slices of the padded input it multiplies."""
    layer: Conv2d = info.layer  # type: ignore[assignment]
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    _, ho, wo = info.output_shape
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
            yield i, j, rows, cols


def _conv_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    layer: Conv2d = info.layer  # type: ignore[assignment]
    w, g = p["weight"], layer.groups
    xp = _pad(info, x)
    n = x.shape[0]
    cin, cout = layer.in_channels // g, layer.out_channels // g
    out = np.zeros((n, *info.output_shape), dtype=x.dtype)
    for group in range(g):
        xs = xp[:, group * cin:(group + 1) * cin]
        ws = w[group * cout:(group + 1) * cout]
        for i, j, rows, cols in _taps(info):
            out[:, group * cout:(group + 1) * cout] += np.einsum("nchw,oc->nohw", xs[:, :, rows, cols], ws[:, :, i, j])
    if "bias" in p:
        out += p["bias"][None, :, None, None]
    return out


def _conv_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray) -> Any:
    layer: Conv2d = info.layer  # type: ignore[assignment]
    w, g = p["weight"], layer.groups
    xp = _pad(info, x)
    cin, cout = layer.in_channels // g, layer.out_channels // g
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    for group in range(g):
        ci, co = slice(group * cin, (group + 1) * cin), slice(group * cout, (group + 1) * cout)
        for i, j, rows, cols in _taps(info):
            gw[co, :, i, j] += np.einsum("nohw,nchw->oc", go[:, co], xp[:, ci, rows, cols])
            gxp[:, ci, rows, cols] += np.einsum("nohw,oc->nchw", go[:, co], w[co, :, i, j])
    # Un-pad: every padded position came from one input position (or from a zero), so gradients add up there.
    (t, b), (l, r) = info.padding  # type: ignore[misc]
    _, h, wd = x.shape[1:]
    if layer.padding_mode == "zeros":
        gx = gxp[:, :, t:t + h, l:l + wd]
    else:
        rows_src = layout.pad_indices(h, t, b, layer.padding_mode)
        cols_src = layout.pad_indices(wd, l, r, layer.padding_mode)
        gx_rows = np.zeros((*gxp.shape[:2], h, gxp.shape[3]), dtype=gxp.dtype)
        np.add.at(gx_rows, (slice(None), slice(None), rows_src), gxp)
        gx = np.zeros(x.shape, dtype=gxp.dtype)
        np.add.at(gx, (slice(None), slice(None), slice(None), cols_src), gx_rows)
    grads = {"weight": gw}
    if "bias" in p:
        grads["bias"] = go.sum(axis=(0, 2, 3))
    return gx, grads


def _linear_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    y = x @ p["weight"].T
    return y + p["bias"] if "bias" in p else y


def _linear_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray) -> Any:
    grads = {"weight": go.T @ x}
    if "bias" in p:
        grads["bias"] = go.sum(axis=0)
    return go @ p["weight"], grads


_FORWARD = {
    Conv2d: _conv_forward,
    ReLU: lambda info, p, x: np.maximum(x, 0),
    Flatten: lambda info, p, x: x.reshape(x.shape[0], -1),
    Linear: _linear_forward,
}
_BACKWARD = {
    Conv2d: _conv_backward,
    ReLU: lambda info, p, x, go: (go * (x > 0), {}),
    Flatten: lambda info, p, x, go: (go.reshape(x.shape), {}),
    Linear: _linear_backward,
}


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
        model.weights[k] = np.array(v, dtype=model.dtype)


def permute(x: Any, perm: tuple[int, ...]) -> Any:
    return np.transpose(x, perm)


def forward(model: NumpyModel, x: np.ndarray) -> np.ndarray:
    return model(x)


def trace(model: NumpyModel, x: np.ndarray, upstream: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """Every layer's output, and the gradients of sum(output * upstream) w.r.t. the input and every weight."""
    gx, grads = model.backward(x, upstream)
    return model.forward_layers(x), gx, grads
