"""Pure-numpy reference backend: the most obviously-correct implementation of every layer, forward and
backward, written for reading rather than speed. It is the oracle the frameworks are tested against and
imports no framework. float64 by default."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..graph import concat_axis, model_outputs, returns_list, token_vocabulary, upstreams
from ..kinds import KINDS
from ..kinds.token import _dot as dot
from ..shapes import LayerInfo
from ..spec import Sequential

NAME = "numpy"


class NumpyModel:
    """A callable model on NCHW numpy arrays. ``weights`` holds canonical arrays (torch layouts).

    Like a torch module it has a ``training`` flag (``train()`` / ``eval()``; False after ``build``): in
    training BatchNorm uses batch statistics and updates its running statistics, and Dropout draws masks
    from ``self.rng``."""

    def __init__(self, spec: Sequential, infos: list[LayerInfo], weights: dict[str, np.ndarray], dtype: str) -> None:
        self.xconv_spec = spec
        self.infos = infos
        self.dtype = dtype
        self.ids = token_vocabulary(infos) is not None  # the input is token ids
        self.weights = {k: np.array(v, dtype=np.int64 if v.dtype.kind in "iu" else dtype) for k, v in weights.items()}
        self.training = False
        self._side: dict[str, np.ndarray] = {}  # the padding mask and token types of the call running
        self.rng = np.random.default_rng(0)
        self._masks: dict[int, np.ndarray] = {}

    def train(self, mode: bool = True) -> NumpyModel:
        self.training = bool(mode)
        return self

    def eval(self) -> NumpyModel:
        return self.train(False)

    def __call__(self, x: np.ndarray, **side: np.ndarray | None) -> Any:
        """The output; a spec with ``outputs``: the list of them."""
        return self.returned(self.forward_layers(x, side=side))

    def returned(self, values: list[np.ndarray]) -> Any:
        """What the model returns, from every node's output (:meth:`forward_layers`)."""
        picked = [values[info.index] for info in model_outputs(self.infos)]
        return picked if returns_list(self.infos) else picked[0]

    def forward_layers(
        self, x: np.ndarray, update: bool = True, side: dict[str, np.ndarray | None] | None = None
    ) -> list[np.ndarray]:
        """The output of every node of the graph, in order (in training, BatchNorm running statistics are
        updated unless ``update`` is False); ``side``: a text encoder's ``padding_mask`` (see
        :class:`xconv.SelfAttention`) and ``token_types`` (see :class:`xconv.TokenTypeEmbedding`)."""
        self._side = {k: np.asarray(v) for k, v in (side or {}).items() if v is not None}
        values: dict[int, np.ndarray] = {-1: self._batch(x)}
        for info in self.infos:
            args = [values[i] for i in info.inputs]
            if info.is_join:
                values[info.index] = _join_forward(info, args, self._drop(info, args, update), self._params(info))
            else:
                values[info.index] = _FORWARD[type(info.layer)](
                    info, self._params(info), args[0], _Mode(self, info, update)
                )
        return [values[info.index] for info in self.infos]

    def backward(
        self, x: np.ndarray, grad_output: Any, **side: np.ndarray | None
    ) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """Gradients of sum(output * grad_output) with respect to the input and every trainable weight
        (canonical keys); a model with several outputs takes one ``grad_output`` per output, in a list, and
        sums the products. Where a tensor feeds several nodes, the gradients from each add up. Uses the
        Dropout masks of the last forward pass; does not update statistics."""
        x = self._batch(x)
        outs = self.forward_layers(x, update=False, side=side)
        values = {-1: x, **{info.index: out for info, out in zip(self.infos, outs)}}
        pending: dict[int, np.ndarray] = {}
        for info, g in zip(model_outputs(self.infos), upstreams(self.infos, grad_output)):
            pending[info.index] = np.asarray(g, dtype=self.dtype)
        grads: dict[str, np.ndarray] = {}
        for info in reversed(self.infos):
            g = pending.pop(info.index, None)
            if g is None:  # the output does not depend on this node
                g = np.zeros_like(values[info.index])
            args = [values[i] for i in info.inputs]
            if info.is_join:
                input_grads, param_grads = _join_backward(
                    info, args, g, self._drop(info, args, False), self._params(info)
                )
                for name, value in param_grads.items():
                    grads[f"{info.key}.{name}"] = value
            else:
                gx, param_grads = _BACKWARD[type(info.layer)](
                    info, self._params(info), args[0], g, _Mode(self, info, False)
                )
                input_grads = [gx]
                for name, value in param_grads.items():
                    grads[f"{info.key}.{name}"] = value
            for source, gi in zip(info.inputs, input_grads):
                if gi is not None:  # (None: token ids, which have no gradient)
                    _accumulate(pending, source, gi)
        gx = None if self.ids else pending.get(-1, np.zeros_like(x))
        return gx, {k: grads[k] for info in self.infos for k in (f"{info.key}.{n}" for n in info.trainable)}

    def _drop(self, info: LayerInfo, args: list[np.ndarray], update: bool) -> np.ndarray | None:
        """A DotProductAttention's dropout mask on its weights in training (None otherwise)."""
        p = float(getattr(info.layer, "dropout", 0.0)) if info.kind == "DotProductAttention" else 0.0
        if not (self.training and p > 0):
            return None
        shape = dot.weights_shape(args[0], args[1], info.layer.num_heads)  # type: ignore[attr-defined]
        return _Mode(self, info, update).mask(shape, p, self.dtype)

    def _batch(self, x: np.ndarray) -> np.ndarray:
        """The input as the model reads it: token ids as int64, numbers in the model's dtype."""
        return np.asarray(x, dtype=np.int64 if self.ids else self.dtype)

    def _params(self, info: LayerInfo) -> dict[str, np.ndarray]:
        return {name: self.weights[f"{info.key}.{name}"] for name in info.params}


def _accumulate(pending: dict[int, np.ndarray], source: int, g: np.ndarray) -> None:
    """Where a tensor feeds several nodes, its gradient is the sum of what each of them sends back."""
    pending[source] = g if source not in pending else pending[source] + g


def _join_forward(
    info: LayerInfo, args: list[np.ndarray], drop: np.ndarray | None = None, params: dict[str, np.ndarray] | None = None
) -> np.ndarray:
    kind = info.kind
    if kind == "DotProductAttention":
        heads = info.layer.num_heads  # type: ignore[attr-defined]
        q, k, v = args
        bias = dot.bias_of(info.layer, params or {})
        return dot.forward(q, k, v, heads, dot.head_scale(info.layer, q.shape[-1]), drop, bias)
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


def _join_backward(
    info: LayerInfo,
    args: list[np.ndarray],
    g: np.ndarray,
    drop: np.ndarray | None = None,
    params: dict[str, np.ndarray] | None = None,
) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """The gradients of a join's inputs, and of its weights (a DotProductAttention's bias table)."""
    if info.kind == "DotProductAttention":
        heads = info.layer.num_heads  # type: ignore[attr-defined]
        q, k, v = args
        bias = dot.bias_of(info.layer, params or {})
        grads, g_bias = dot.backward(q, k, v, heads, dot.head_scale(info.layer, q.shape[-1]), g, drop, bias)
        table = {} if bias is None else {"attention_biases": dot.bias_table_grad(info.layer, g_bias)}
        return grads, table
    return _join_input_grads(info, args, g), {}


def _join_input_grads(info: LayerInfo, args: list[np.ndarray], g: np.ndarray) -> list[np.ndarray]:
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

    @property
    def padding_mask(self) -> np.ndarray | None:
        return self.model._side.get("padding_mask")

    @property
    def token_types(self) -> np.ndarray | None:
        return self.model._side.get("token_types")

    def mask(self, shape: tuple[int, ...], p: float, dtype: Any) -> np.ndarray:
        """Dropout's keep-mask scaled by 1 / (1 - p): drawn on a forward pass, reused by the backward pass."""
        if self.update or self.info.index not in self.model._masks:
            keep = self.model.rng.random(shape) >= p
            scale = np.asarray(0.0 if p == 1 else 1.0 / (1.0 - p), dtype=dtype)
            self.model._masks[self.info.index] = keep.astype(dtype) * scale
        return self.model._masks[self.info.index]


# ---- Conv2d: explicit pad, then a sum over kernel taps of strided slices ----


# ---- pooling: explicit pad (-inf for max, zeros for average), then the kernel's taps as strided slices ----


# ---- ConvTranspose2d: each input pixel adds its kernel-weighted copy at stride s into the full output, of which
# padding crops both ends; Upsample: out = A_h x A_w^T with the per-axis matrices of xconv.resample ----


# ---- BatchNorm: torch's definition (biased batch variance to normalise, unbiased into running_var) ----


# ---- Dropout and activations ----


#: layer class -> its numpy reference forward (info, params, x, mode) -> y, and backward (info, params, x, grad
#: of y, mode) -> (grad of x, {param: grad}), from the kind registry
_FORWARD: dict[type, Any] = {cls: kind.forward for cls, kind in KINDS.items()}
_BACKWARD: dict[type, Any] = {cls: kind.backward for cls, kind in KINDS.items()}


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


def forward(model: NumpyModel, x: np.ndarray, **side: np.ndarray | None) -> Any:
    """Inference (running statistics, no dropout), whatever the model's mode."""
    was = model.training
    model.eval()
    try:
        return model(x, **side)
    finally:
        model.train(was)


def forward_training(
    model: NumpyModel, x: np.ndarray, output: str | list[str] | None = None, **side: np.ndarray | None
) -> Any:
    """One training-mode call (BatchNorm on batch statistics), the running statistics left as they were."""
    was = model.training
    model.train()
    try:
        return model.returned(model.forward_layers(x, update=False, side=side))
    finally:
        model.train(was)


def trace(
    model: NumpyModel,
    x: np.ndarray,
    upstream: Any,
    training: bool = False,
    **side: np.ndarray | None,
) -> tuple[list[np.ndarray], np.ndarray | None, dict[str, np.ndarray]]:
    """Every layer's output, and the gradients of sum(output * upstream) w.r.t. the input and every trainable
    weight, in inference or (``training``) training mode; in training the running statistics are updated
    once, as by one framework call."""
    was = model.training
    model.train(training)
    try:
        outs = model.forward_layers(x, side=side)
        gx, grads = model.backward(x, upstream, **side)
    finally:
        model.train(was)
    return outs, gx, grads
