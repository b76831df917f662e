"""The token operations of a traced or exported torch forward that use the model's own parameters: a class token
(a parameter of shape (1, 1, E), expanded over the batch and put in front with ``torch.cat``), a learned
positional embedding (tokens plus a parameter of shape (1, L, E)), and the mean over the tokens."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from ..backends._torch_env import torch
from ..errors import UnsupportedLayerError
from ..spec import ClassToken, PositionEmbedding, TokenMean
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
) -> tuple[Raw, dict[str, Any]] | None:
    """Tokens plus a learned parameter of their shape (1, L, E): a PositionEmbedding node and its state; None
    when the sum is not of a parameter and a computed tensor."""
    if len(args) != 2 or node.kwargs or sum(a in params for a in args) != 1 or sum(a in index for a in args) != 1:
        return None
    p_node, x = (args[0], args[1]) if args[0] in params else (args[1], args[0])
    shape, p = _shape(x), params[p_node]
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
    """Whether a module that imports whole returns (output, attention weights): ``nn.MultiheadAttention`` and
    Hugging Face's attentions, read through ``[0]``."""
    from ..kinds.token._torch import is_hf_attention

    return isinstance(m, torch.nn.MultiheadAttention) or is_hf_attention(m)


def self_attention_call(gm: Any, node: Any, where: str) -> bool:
    """Whether ``node`` calls an attention module that returns (output, weights); it must be self-attention:
    query, key and value the same tensor, no masks (its output is then read through ``[0]``)."""
    if node.op != "call_module" or not returns_pair(gm.get_submodule(node.target)):
        return False
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


def _random(target: Any) -> bool:
    """Whether an ATen call draws random numbers or leaves memory uninitialised (never a constant)."""
    name = getattr(target, "__name__", "")
    tags = getattr(target, "tags", ())
    return torch.Tag.nondeterministic_seeded in tags or name.startswith(("empty", "rand", "bernoulli", "normal"))


def _shape(node: Any) -> tuple[int, ...] | None:
    return getattr(node, "meta", {}).get("xconv_shape")


def drop_open_masks(graph: Any) -> None:
    """In an exported program: an attention mask computed from constants alone that lets every query attend to
    every key (all True, or an additive mask of zeros) is no mask; the ``scaled_dot_product_attention`` call
    is given None instead (Hugging Face models build such a mask from ``arange`` when exported without one)."""
    for n in list(graph.nodes):
        if n.op != "call_function" or getattr(n.target, "__name__", "") != "scaled_dot_product_attention.default":
            continue
        position = 3 if len(n.args) > 3 else None
        mask = n.args[3] if position is not None else n.kwargs.get("attn_mask")
        if not isinstance(mask, torch.fx.Node):
            continue
        value = _constant(mask, {})
        open_mask = isinstance(value, torch.Tensor) and (
            bool(value.all()) if value.dtype == torch.bool else bool((value == 0).all())
        )
        if not open_mask:
            continue
        if position is not None:
            n.args = (*n.args[:3], None, *n.args[4:])
        else:
            n.kwargs = {**n.kwargs, "attn_mask": None}


def _constant(node: Any, memo: dict[Any, Any]) -> Any:
    """The value of a node computed from constants alone (no input, parameter or buffer), evaluated; None when
    it reads any of them or is too large to evaluate."""
    if not isinstance(node, torch.fx.Node):
        return node
    if node in memo:
        return memo[node]
    memo[node] = None  # (a given placeholder's value is in memo from the start)
    if node.op != "call_function" or _random(node.target):
        return None
    values = []
    for a in node.all_input_nodes:
        v = _constant(a, memo)
        if v is None:
            return None
        values.append(v)
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor) and val.numel() > 10**7:
        return None
    env = dict(zip(node.all_input_nodes, values))
    args = torch.fx.node.map_arg(node.args, lambda a: env[a])
    kwargs = torch.fx.node.map_arg(node.kwargs, lambda a: env[a])
    try:
        memo[node] = node.target(*args, **kwargs)  # type: ignore[operator]  # (a call_function's target)
    except Exception:  # noqa: BLE001 - not a constant xconv can evaluate: the mask stays, and is refused
        memo[node] = None
    return memo[node]


def fixed_ids(node: Any, args: list[Any], params: dict[Any, Any], fixed: set[Any], consts: dict[Any, Any]) -> Any:
    """An integer tensor computed from buffers and sizes alone, evaluated: BERT's position ids (a slice of a
    buffer holding ``arange``) and its token types when none are given (a buffer of zeros, gathered and
    expanded over the batch). None for anything else. An expansion over the batch is evaluated for a batch of
    one (the rows are the same; an embedding of them is checked to be)."""
    if node.op not in ("call_function", "call_method") or _random(node.target):
        return None
    inputs = node.all_input_nodes
    if not any(a in fixed for a in inputs) or not all(a in fixed or a in consts for a in inputs):
        return None
    expand = node.op == "call_method" and node.target == "expand"

    def value(a: Any) -> Any:
        v: Any = params[a] if a in fixed else consts[a]
        if v is BATCH or isinstance(v, tuple) and any(d is BATCH for d in v):
            if not expand:
                raise LookupError
            return 1 if v is BATCH else tuple(1 if d is BATCH else d for d in cast(tuple[Any, ...], v))
        return v

    try:
        env = {a: value(a) for a in inputs}
        call_args = torch.fx.node.map_arg(node.args, lambda a: env[a])
        kwargs = torch.fx.node.map_arg(node.kwargs, lambda a: env[a])
        if node.op == "call_method":
            result = getattr(call_args[0], str(node.target))(*call_args[1:], **kwargs)
        else:
            result = node.target(*call_args, **kwargs)
    except Exception:  # noqa: BLE001 - not evaluable here: the node is read as an operation (and refused)
        return None
    if not isinstance(result, torch.Tensor) or result.is_floating_point() or result.is_complex():
        return None
    return result if result.numel() <= 10**6 else None


def fixed_embedding(m: Any, ids: Any, key: str, name: str, where: str) -> tuple[Any, dict[str, Any]]:
    """``nn.Embedding`` of fixed ids (see :func:`fixed_ids`), the same for every sample: the positions 0..L-1
    are a PositionEmbedding over the table's rows, one id for every token a TokenTypeEmbedding. (layer, state);
    anything else is refused."""
    from ..spec import TokenTypeEmbedding

    rows = ids.reshape(-1, ids.shape[-1]) if ids.dim() >= 1 else ids.reshape(1, 1)
    row = rows[0]
    length, table = int(row.numel()), m.weight
    problems = [
        (m.max_norm is not None, f"max_norm={m.max_norm}"),
        (m.scale_grad_by_freq, "scale_grad_by_freq=True"),
        (m.padding_idx is not None and bool((row == m.padding_idx).any()), f"padding_idx={m.padding_idx} among them"),
        (ids.dim() != 2 or not bool((rows == row).all()), "ids that differ between samples"),
    ]
    bad = [what for fails, what in problems if fails]
    if bad:
        raise UnsupportedLayerError(f"from_torch: {where}: an nn.Embedding of fixed ids with {bad[0]} is not supported")
    e = int(table.shape[1])
    if torch.equal(row, torch.arange(length, dtype=row.dtype)):
        layer: Any = PositionEmbedding(length, e, int(table.shape[0]), name=name, keys=(("embedding", key),))
        return layer, {f"{name}.embedding": table.unsqueeze(0)}
    if bool((row == row[0]).all()):
        keys = () if key == f"{name}.weight" else (("weight", key),)
        layer = TokenTypeEmbedding(int(table.shape[0]), e, int(row[0]), name=name, keys=keys)
        return layer, {f"{name}.weight": table}
    raise UnsupportedLayerError(
        f"from_torch: {where}: an nn.Embedding of fixed ids is supported for the positions 0 to L - 1 (a "
        f"positional embedding) or one id for every token (a token type); here the ids are {row.tolist()[:8]}"
    )


def padding_mask_reads(graph: Any, batch: int) -> Any:
    """In an exported program whose forward's second argument is a padding mask (N, L), 1 for a token and 0
    for padding: each ``scaled_dot_product_attention`` mask computed from it alone is checked to be that
    mask's keys, broadcast over the queries and heads (True where the key is a token), on the probe masks and
    random ones; the call is then given the padding mask itself, so its module reads it. Returns the mask's
    placeholder (None without a second argument). A mask that is anything else stays, and is refused."""
    from .._compare import padding_masks

    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 2:
        return None
    mask = placeholders[1]
    length = int(mask.meta["val"].shape[1]) if "val" in mask.meta else 0
    rng = np.random.default_rng(0)
    trials = [padding_masks(batch, length), np.ones((batch, length), dtype=np.int64)]
    for _ in range(4):
        m = (rng.random((batch, length)) < 0.6).astype(np.int64)
        m[:, 0] = 1
        trials.append(m)
    for n in list(graph.nodes):
        if n.op != "call_function" or getattr(n.target, "__name__", "") != "scaled_dot_product_attention.default":
            continue
        position = 3 if len(n.args) > 3 else None
        given = n.args[3] if position is not None else n.kwargs.get("attn_mask")
        if not isinstance(given, torch.fx.Node) or given is mask:
            continue
        if all(_keys_of(given, mask, torch.from_numpy(m)) for m in trials):
            if position is not None:
                n.args = (*n.args[:3], mask, *n.args[4:])
            else:
                n.kwargs = {**n.kwargs, "attn_mask": mask}
    return mask


def _keys_of(node: Any, mask: Any, value: Any) -> bool:
    """Whether ``node``, computed from ``mask`` alone (set to ``value``), is True exactly where its key is a
    token: ``value[:, None, None, :] != 0`` broadcast to its shape."""
    got = _constant(node, {mask: value})
    if not isinstance(got, torch.Tensor) or got.dtype != torch.bool or got.dim() != 4:
        return False
    want = (value != 0)[:, None, None, :]
    try:
        return bool(torch.equal(got, want.expand(got.shape)))
    except RuntimeError:  # (not broadcastable: another shape)
        return False


def id_positions(node: Any, ids: Any, m: Any, where: str, known: dict[Any, Any]) -> Any:
    """For an ``nn.Embedding`` call on ``node``, integers computed from the token ids ``ids`` (and the buffers
    in ``known``) alone: a PaddedPositions layer when ``node`` is, on random ids with padding among them,
    RoBERTa's positions of the tokens that are not the table's ``padding_idx``; the ids themselves (a tensor)
    when they are the same for every batch (RoBERTa's token types, zeros gathered at the positions); anything
    else is refused."""
    from ..spec import PaddedPositions

    pad = m.padding_idx
    length = int((ids.meta.get("xconv_shape") or (0, 0))[1])
    rng = np.random.default_rng(0)
    trials = []
    for _ in range(4):
        batch = rng.integers(0, max(2, int(m.num_embeddings)), (3, length))
        batch[rng.random(batch.shape) < 0.3] = 0 if pad is None else pad
        trials.append(torch.from_numpy(batch))
    values = [_evaluate(node, {**known, ids: value}) for value in trials]
    if all(isinstance(v, torch.Tensor) and v.shape == values[0].shape for v in values) and all(
        torch.equal(v, values[0]) for v in values
    ):
        return values[0]  # (the same whatever the ids)
    for value, got in zip(trials, values):
        if pad is None or not isinstance(got, torch.Tensor) or got.shape != value.shape:
            break
        tokens = (value != pad).long()
        if not torch.equal(got.long(), torch.cumsum(tokens, dim=1) * tokens + pad):
            break
    else:
        return PaddedPositions(int(pad))
    raise UnsupportedLayerError(
        f"from_torch: {where} looks up ids computed from the token ids, which are not the positions of the "
        "tokens that are not padding (RoBERTa's, counted from the table's padding_idx + 1)"
    )


def _evaluate(node: Any, env: dict[Any, Any]) -> Any:
    """The value of a read-graph node computed from the nodes in ``env`` (and constants) alone; None else."""
    if not isinstance(node, torch.fx.Node):
        return node
    if node in env:
        return env[node]
    if node.op not in ("call_function", "call_method") or _random(node.target):
        return None
    values = {a: _evaluate(a, env) for a in node.all_input_nodes}
    if any(v is None for v in values.values()):
        return None
    args = torch.fx.node.map_arg(node.args, lambda a: values[a])
    kwargs = torch.fx.node.map_arg(node.kwargs, lambda a: values[a])
    try:
        if node.op == "call_method":
            env[node] = getattr(args[0], str(node.target))(*args[1:], **kwargs)
        else:
            env[node] = node.target(*args, **kwargs)  # type: ignore[operator]  # (a call_function's target)
    except Exception:  # noqa: BLE001 - not evaluable: refused by the caller
        return None
    return env[node]


def from_ids(node: Any, ids: Any, computed: set[Any], consts: dict[Any, Any], fixed: set[Any]) -> bool:
    """Whether ``node`` is an integer tensor computed from the token ids ``ids`` (and sizes and buffers) alone,
    by an operation (not a module)."""
    if node.op not in ("call_function", "call_method") or not node.meta.get("xconv_integer"):
        return False
    inputs = node.all_input_nodes
    return any(a is ids or a in computed for a in inputs) and all(
        a is ids or a in computed or a in consts or a in fixed for a in inputs
    )
