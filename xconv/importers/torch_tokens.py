"""The token operations of a traced or exported torch forward that use the model's own parameters: a class token
(a parameter of shape (1, 1, E), expanded over the batch and put in front with ``torch.cat``), a learned
positional embedding (tokens plus a parameter of shape (1, L, E)), and the mean over the tokens."""

from __future__ import annotations

from typing import Any

from ..backends._torch_env import torch
from ..errors import UnsupportedLayerError
from ..spec import ClassToken, PositionEmbedding, PositionEmbedding2d, TokenMean
from ._graph import Names, Raw
from .torch_checks import storage_of as _storage
from .torch_shapes import BATCH, ShapeOps


def expanded_parameter(node: Any, args: list[Any], params: dict[Any, Any], shapes: ShapeOps, where: str) -> Any:
    """``p.expand(N, -1, -1)`` of a parameter p of shape (1, T, E) over the batch: p itself (the spec's layers
    broadcast it); None for other calls. Other expansions of a parameter are refused."""
    if not (node.op == "call_method" and node.target == "expand" and args and args[0] in params):
        return None
    p = params[args[0]]
    sizes = shapes.resolve(list(args[1:]))
    if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
        sizes = list(sizes[0])
    ok = (
        isinstance(p, torch.Tensor)
        and p.dim() == 3
        and p.shape[0] == 1
        and len(sizes) == 3
        and sizes[0] is BATCH
        and all(s in (-1, p.shape[i]) for i, s in ((1, sizes[1]), (2, sizes[2])))
    )
    if not ok:
        raise UnsupportedLayerError(
            f"from_torch: {where}: a parameter is expanded only as a token of shape (1, T, E) over the batch, "
            "p.expand(N, -1, -1)"
        )
    return p


def class_tokens(
    node: Any,
    parts: list[Any],
    dim: Any,
    params: dict[Any, Any],
    index: dict[Any, int],
    source: Any,
    learned: set[str],
    names: Names,
    nodes: list[Raw],
    where: str,
) -> dict[str, Any] | None:
    """``torch.cat([t1, ..., tk, x], dim=1)`` of learned tokens t (parameters of shape (1, T, E), expanded over
    the batch) and tokens x: one ClassToken per t, the last first, appended to ``nodes``; ``index[node]`` is the
    last. Returns the state of the layers, or None when no part is a parameter."""
    if not any(p in params for p in parts):
        return None
    *tokens, x = parts
    shape = _shape(x)
    if (
        x not in index
        or not tokens
        or any(t not in params for t in tokens)
        or shape is None
        or len(shape) != 3
        or not isinstance(dim, int)
        or dim % 3 != 1
    ):
        raise UnsupportedLayerError(
            f"from_torch: {where}: a concatenation with parameters is supported only as learned tokens put in front "
            "of the tokens: torch.cat([token.expand(N, -1, -1), x], dim=1)"
        )
    state: dict[str, Any] = {}
    last = index[x]
    for t in reversed(tokens):
        p = params[t]
        _learned(p, source, learned, t, where, "learned token")
        if p.dim() != 3 or p.shape[0] != 1 or p.shape[2] != shape[2]:
            raise UnsupportedLayerError(
                f"from_torch: {where}: learned tokens of shape {tuple(p.shape)} in front of tokens of {shape[2]} "
                "features; supported: tokens of shape (1, T, E)"
            )
        key = source.get(_storage(p), str(t.target))
        name = names.take(key.replace(".", "_"))
        layer = ClassToken(int(shape[2]), int(p.shape[1]), name=name, keys=(("token", key),))
        nodes.append(Raw(name, "layer", [last], layer=layer, owned=True))
        last = len(nodes) - 1
        state[f"{name}.token"] = p
    index[node] = last
    return state


def position_embedding(
    node: Any,
    args: list[Any],
    params: dict[Any, Any],
    index: dict[Any, int],
    source: Any,
    learned: set[str],
    names: Names,
    where: str,
    nhwc: set[Any] = frozenset(),  # type: ignore[assignment]
) -> tuple[Raw, dict[str, Any]] | None:
    """Tokens plus a learned parameter of their shape (1, L, E): a PositionEmbedding node and its state; an
    NCHW map plus one of its shape (1, C, H, W): a PositionEmbedding2d; None when the sum is not of a parameter
    and a computed tensor of its shape."""
    if len(args) != 2 or node.kwargs or sum(a in params for a in args) != 1 or sum(a in index for a in args) != 1:
        return None
    p_node, x = (args[0], args[1]) if args[0] in params else (args[1], args[0])
    shape, p = _shape(x), params[p_node]
    if shape is not None and len(shape) == 4 and x not in nhwc:  # (a map: PiT's pos_embed, (1, C, H, W))
        if not isinstance(p, torch.Tensor) or tuple(p.shape) != (1, *shape[1:]):
            return None
        _learned(p, source, learned, p_node, where, "learned embedding of the map")
        key = source.get(_storage(p), str(p_node.target))
        name = names.take(key.replace(".", "_"))
        layer2d = PositionEmbedding2d(*(int(d) for d in shape[1:]), name=name, keys=(("embedding", key),))
        return Raw(name, "layer", [index[x]], layer=layer2d, owned=True), {f"{name}.embedding": p}
    if shape is None or len(shape) != 3:
        return None
    if not isinstance(p, torch.Tensor) or tuple(p.shape) != (1, *shape[1:]):
        raise UnsupportedLayerError(
            f"from_torch: {where}: a sum of tokens {tuple(shape[1:])} and a parameter is supported only as a learned "
            f"positional embedding of shape (1, L, E); got {tuple(getattr(p, 'shape', ()))}"
        )
    _learned(p, source, learned, p_node, where, "learned positional embedding")
    key = source.get(_storage(p), str(p_node.target))
    name = names.take(key.replace(".", "_"))
    layer = PositionEmbedding(int(shape[1]), int(shape[2]), name=name, keys=(("embedding", key),))
    return Raw(name, "layer", [index[x]], layer=layer, owned=True), {f"{name}.embedding": p}


def _learned(p: Any, source: Any, learned: set[str], node: Any, where: str, what: str) -> None:
    """Refuse a buffer or constant where a learned parameter is imported (a fixed sinusoidal embedding would be
    trained in the ported model)."""
    key = source.get(_storage(p), str(node.target))
    if key not in learned:
        raise UnsupportedLayerError(
            f"from_torch: {where}: {key!r} is imported as a {what} but is not a parameter of the model (a buffer "
            "or constant is fixed; the ported model would learn it)"
        )


def token_mean(node: Any, args: list[Any]) -> TokenMean | None:
    """``x.mean(1)`` / ``x.mean(dim=1)`` / ``torch.mean(x, [1])`` of tokens (N, L, E): a TokenMean, else None."""
    if not (
        node.op == "call_method" and node.target == "mean" or node.op == "call_function" and node.target is torch.mean
    ):
        return None
    shape = _shape(args[0]) if args else None
    dims = args[1] if len(args) > 1 else node.kwargs.get("dim")
    keepdim = args[2] if len(args) > 2 else node.kwargs.get("keepdim", False)
    if shape is None or len(shape) != 3 or keepdim is not False or set(node.kwargs) - {"dim", "keepdim"}:
        return None
    dims = list(dims) if isinstance(dims, (list, tuple)) else [dims]
    return TokenMean() if len(dims) == 1 and isinstance(dims[0], int) and dims[0] % 3 == 1 else None


def returns_pair(m: Any) -> bool:
    """Whether a module that imports whole returns (output, attention weights): ``nn.MultiheadAttention``,
    Hugging Face's attentions and its Swin layers, read through ``[0]``."""
    from ..kinds.token._torch import is_hf_attention
    from ..kinds.window._torch_sources import is_hf_swin_layer

    return isinstance(m, torch.nn.MultiheadAttention) or is_hf_attention(m) or is_hf_swin_layer(m)


def self_attention_call(gm: Any, node: Any, where: str) -> bool:
    """Whether ``node`` calls an attention module that returns (output, weights); it must be self-attention:
    query, key and value the same tensor, no masks (its output is then read through ``[0]``)."""
    if node.op != "call_module" or not returns_pair(gm.get_submodule(node.target)):
        return False
    from ..kinds.window._torch_sources import is_hf_swin_layer

    if is_hf_swin_layer(gm.get_submodule(node.target)):  # (a block, called with its map's size)
        return True
    if not isinstance(gm.get_submodule(node.target), torch.nn.MultiheadAttention):
        if len(node.args) != 1 or any(v is not None for v in node.kwargs.values()):
            raise UnsupportedLayerError(f"from_torch: {where} is supported without a mask or other arguments")
        return True
    names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights")
    values = {**dict(zip(names, node.args)), **node.kwargs}
    masks = [k for k in ("key_padding_mask", "attn_mask") if values.get(k) is not None]
    if masks or values.get("is_causal") or len({id(values.get(k)) for k in ("query", "key", "value")}) != 1:
        raise UnsupportedLayerError(
            f"from_torch: {where} is supported as self-attention only: query, key and value the same tensor, "
            f"without masks{f' (given {masks[0]})' if masks else ''}"
        )
    return True


def _shape(node: Any) -> tuple[int, ...] | None:
    return getattr(node, "meta", {}).get("xconv_shape")


class TokenBatches:
    """timm's LeViT normalises tokens (N, L, E) as one batch of N * L feature vectors: ``t.flatten(0, 1)``, an
    ``nn.BatchNorm1d`` call on it, and the result viewed back in the tokens' shape (``reshape_as(t)``). The
    three steps import as one BatchNorm1d on the tokens; any other use of the flattened batch, or of its
    normalised form, is refused by name."""

    def __init__(self, gm: Any, shapes: ShapeOps) -> None:
        self.gm, self.shapes = gm, shapes
        self.flat: dict[Any, Any] = {}  # t.flatten(0, 1): t
        self.normed: dict[Any, Any] = {}  # the BatchNorm1d call on it: t

    def step(self, node: Any, args: list[Any], where: str) -> bool:
        """Whether ``node`` is a step that is handled here (the flatten, or the view back); refuses any other
        reader of their tensors. The BatchNorm1d call itself is imported as the module it is (False)."""
        index = self.shapes.index
        nodes: list[Any] = []
        torch.fx.node.map_arg((tuple(args), dict(node.kwargs)), nodes.append)
        read = [a for a in nodes if a in self.flat]
        method = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
        src = args[0] if args else None
        back = method in ("reshape_as", "view_as", "view", "reshape")
        if src in self.normed and back and self.shapes.shape(node) == self.shapes.shape(self.normed[src]):
            index[node] = index[src]
            return True
        if any(a in self.normed for a in nodes):
            raise UnsupportedLayerError(
                f"from_torch: {where} reads tokens normalised as one batch of N * L features; supported: only "
                "their view back in the tokens' shape, bn(x.flatten(0, 1)).reshape_as(x)"
            )
        if read:
            module = self.gm.get_submodule(node.target) if node.op == "call_module" else None
            if type(module) is torch.nn.BatchNorm1d and args == [read[0]] and not node.kwargs:
                self.normed[node] = self.flat[read[0]]
                return False
            raise UnsupportedLayerError(
                f"from_torch: {where} reads tokens flattened with the batch, (N * L, E); supported: only an "
                "nn.BatchNorm1d of them, viewed back in the tokens' shape, bn(x.flatten(0, 1)).reshape_as(x)"
            )
        if method != "flatten" or src not in index or src in self.shapes.nhwc:
            return False
        shape = self.shapes.shape(src)
        given = {**dict(zip(("start_dim", "end_dim"), self.shapes.resolve(list(args[1:])))), **node.kwargs}
        if shape is None or len(shape) != 3 or given.get("start_dim", 0) != 0 or given.get("end_dim") not in (1, -2):
            return False
        self.flat[node] = src
        index[node] = index[src]
        return True
