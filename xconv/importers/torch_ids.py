"""What a text encoder's traced or exported forward does with its token ids and its padding mask.

Integer tensors that are not the ids are evaluated, never guessed from their shapes:

- computed from buffers and sizes alone (BERT's position ids, a slice of an ``arange`` buffer; its token types
  when none are given, a buffer of zeros): evaluated once, and an ``nn.Embedding`` of them is a
  PositionEmbedding (the ids 0..L-1) or a TokenTypeEmbedding (one id everywhere);
- computed from the ids: RoBERTa's positions (the positions of the tokens that are not padding, checked on
  random ids with padding among them), or a lookup into a buffer whose values are all one id (its token types,
  zeros gathered at those positions), which is that id whatever the ids are;
- the attention mask Hugging Face builds from the padding mask: checked on several masks to be the mask's keys.

Anything else is refused, naming the layer."""

from __future__ import annotations

import operator
from typing import Any, cast

import numpy as np

from ..backends._torch_env import nn, torch
from ..errors import UnsupportedLayerError
from ..spec import PaddedPositions, PositionEmbedding, TokenTypeEmbedding
from ._graph import Names, Raw
from .torch_shapes import BATCH

#: calls whose result holds only values of their first argument (reshaped, repeated, selected or looked up)
_SAME_VALUES = {
    "clone",
    "contiguous",
    "expand",
    "flatten",
    "gather",
    "getitem",
    "index",
    "index_select",
    "int",
    "long",
    "permute",
    "repeat",
    "reshape",
    "select",
    "slice",
    "squeeze",
    "take",
    "to",
    "transpose",
    "unsqueeze",
    "view",
}


class TokenIds:
    """The token ids and padding mask of one import, as its graph is read node by node: the forward's ids
    (``ids``), its padding mask (``mask``), the nodes computed from the ids (``from_ids``) or from buffers and
    sizes alone (``fixed``), and the ``nn.Embedding`` calls on ids that are not the input's, waiting for the
    sum that adds them (``looked_up``: node -> (layer, state))."""

    def __init__(self, gm: Any, params: dict[Any, Any], consts: dict[Any, Any], names: Names, vocabulary: Any) -> None:
        self.gm, self.params, self.consts, self.names = gm, params, consts, names
        self.vocabulary: int | None = vocabulary  # the input's ids are below it (None: the input is numbers)
        self.ids: Any = None
        self.mask: Any = None
        self.types: Any = None
        self.from_ids: set[Any] = set()
        self.fixed: set[Any] = set()
        self.looked_up: dict[Any, Any] = {}

    def input(self, node: Any) -> None:
        """The forward's first argument, ``node``: the token ids, when the model takes them."""
        self.ids = node if self.vocabulary is not None else None

    def is_mask(self, node: Any, masked: bool) -> bool:
        """Whether the placeholder ``node`` is the padding mask (the forward's second argument, when the model
        is imported with one: ``masked``), which attention modules alone read."""
        if masked and self.mask is None and node.meta.get("xconv_padding"):
            self.mask = node
            return True
        return False

    def is_types(self, node: Any) -> bool:
        """Whether the placeholder ``node`` is the token types (the forward's argument after the ids and the
        padding mask, when the model is imported with them), which an ``nn.Embedding`` alone reads."""
        if self.types is None and node.meta.get("xconv_types"):
            self.types = node
            return True
        return False

    def side_call(self, node: Any, args: list[Any], where: str) -> str | None:
        """For a call that reads the padding mask or the token types: "" for the padding mask as an attention
        module reads it (Hugging Face's (N, 1, 1, L)), which is no layer; ``"padding_mask"`` for an attention
        module's call on (tokens, the mask), ``"token_types"`` for xconv's token-type embedding's on (tokens,
        the types) or an ``nn.Embedding``'s on the types (its lookup waits, in ``looked_up``, for the sum that
        adds it to the tokens). Any other reader is refused; None for a call that reads neither."""
        if node.meta.get("xconv_padding") and node.op != "placeholder":
            return ""
        second = args[1] if len(args) == 2 and isinstance(args[1], torch.fx.Node) else None
        if (
            node.op == "call_module"
            and second is not None
            and self.mask is not None
            and second.meta.get("xconv_padding")
        ):
            return "padding_mask"
        if node.op == "call_module" and second is not None and second is self.types:
            return "token_types"
        if self.types is not None and node.op == "call_module" and args == [self.types]:
            table = self.gm.get_submodule(node.target)
            if type(table) is nn.Embedding:
                name = self.names.take(str(node.target), own=True)
                self.looked_up[node] = types_embedding(table, f"{node.target}.weight", name, where)
                return ""
        if any(a.meta.get("xconv_padding") for a in node.all_input_nodes):
            raise UnsupportedLayerError(
                f"from_torch: {where} reads the padding mask; an attention module reads it, nothing else"
            )
        if self.types is not None and self.types in node.all_input_nodes:
            hint = (
                " (a forward that takes a padding mask before its token types, as Hugging Face's BERT, needs "
                "padding_mask=True as well)"
                if self.mask is None
                else ""
            )
            raise UnsupportedLayerError(
                f"from_torch: {where} reads the token types; an nn.Embedding that looks them up, added to the "
                f"tokens, reads them, nothing else{hint}"
            )
        return None

    def fixed_step(self, node: Any, args: list[Any], where: str) -> bool:
        """Integers computed from buffers and sizes alone, evaluated (and recorded as a parameter of the
        graph), and an ``nn.Embedding`` call on them; whether ``node`` was one."""
        ids = fixed_ids(node, self.params, self.fixed, self.consts)
        if ids is not None:
            self.params[node] = ids
            self.fixed.add(node)
            return True
        if not _embedding_of(self.gm, node, args, self.fixed):
            return False
        table = self.gm.get_submodule(node.target)
        name = self.names.take(str(node.target), own=True)
        self.looked_up[node] = fixed_embedding(table, self.params[args[0]], f"{node.target}.weight", name, where)
        return True

    def ids_step(self, node: Any, args: list[Any], where: str, nodes: list[Raw], index: dict[Any, int]) -> bool:
        """Integers computed from the ids, and an ``nn.Embedding`` call on them: one id for every token (a
        fixed embedding, added by the sum that reads it: True), or RoBERTa's positions (a PaddedPositions node
        appended; the call itself is then imported as the Embedding it is: False)."""
        if self.ids is None:
            return False
        if from_ids(node, self.ids, self.from_ids, self.consts, self.fixed):
            self.from_ids.add(node)
            return True
        if not _embedding_of(self.gm, node, args, self.from_ids):
            return False
        table = self.gm.get_submodule(node.target)
        buffers = {n: self.params[n] for n in self.fixed if n.op == "get_attr"}

        def known(batch: int) -> dict[Any, Any]:  # (buffers, and sizes for a batch of that many)
            return {**{n: _at_batch(v, batch) for n, v in self.consts.items()}, **buffers}

        positions = id_positions(args[0], self.ids, table, cast(int, self.vocabulary), where, known)
        if isinstance(positions, torch.Tensor):  # one id for every token, whatever the ids
            name = self.names.take(str(node.target), own=True)
            self.looked_up[node] = fixed_embedding(table, positions, f"{node.target}.weight", name, where)
            return True
        name = self.names.take(f"{node.target}_positions")
        positions = PaddedPositions(positions.padding_idx, name=name)
        index[args[0]] = len(nodes)
        nodes.append(Raw(name, "layer", [index[self.ids]], layer=positions))
        return False

    def added(self, args: list[Any], index: dict[Any, int]) -> tuple[Raw, dict[str, Any]] | None:
        """A sum of tokens and a fixed embedding (see :meth:`fixed_step`): its layer's node and state."""
        fixed = [a for a in args if a in self.looked_up] if len(args) == 2 else []
        if not fixed or (fixed[0] is args[0] and args[1] not in index):
            return None
        layer, state = self.looked_up.pop(fixed[0])
        x = args[0] if args[1] is fixed[0] else args[1]
        return Raw(layer.name, "layer", [index[x]], layer=layer, owned=True), state


def input_vocabulary(gm: Any) -> int | None:
    """The smallest vocabulary of the ``nn.Embedding`` modules that look up the forward's first argument
    itself (the ids are drawn below it); None when none does."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if not placeholders:
        return None
    sizes = [
        int(gm.get_submodule(n.target).num_embeddings)
        for n in gm.graph.nodes
        if _embedding_of(gm, n, list(n.args), {placeholders[0]})
    ]
    return min(sizes) if sizes else None


def _embedding_of(gm: Any, node: Any, args: list[Any], ids: set[Any]) -> bool:
    """Whether ``node`` calls an ``nn.Embedding`` on one of the nodes ``ids``."""
    return (
        node.op == "call_module"
        and bool(args)
        and args[0] in ids
        and type(gm.get_submodule(node.target)) is nn.Embedding
    )


def _at_batch(value: Any, n: int) -> Any:
    """A size value with the symbolic batch size as ``n`` (to evaluate a computation on a batch of n)."""
    if value is BATCH:
        return n
    if isinstance(value, tuple):
        return tuple(n if v is BATCH else v for v in value)
    return value


def _random(target: Any) -> bool:
    """Whether a call draws random numbers or leaves memory uninitialised (never a constant)."""
    name = getattr(target, "__name__", "")
    tags = getattr(target, "tags", ())
    return torch.Tag.nondeterministic_seeded in tags or name.startswith(("empty", "rand", "bernoulli", "normal"))


def evaluate(node: Any, env: dict[Any, Any]) -> Any:
    """The value of a graph node computed from the nodes whose values ``env`` holds (and literals) alone,
    evaluated (and kept in ``env``); None when it reads anything else (an input, parameter or buffer not in
    ``env``), draws random numbers, fails, or is too large to evaluate."""
    if not isinstance(node, torch.fx.Node):
        return node
    if node in env:
        return env[node]
    env[node] = None
    if node.op not in ("call_function", "call_method") or _random(node.target):
        return None
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor) and val.numel() > 10**7:
        return None
    values = {a: evaluate(a, env) for a in node.all_input_nodes}
    if any(v is None for v in values.values()):
        return None
    args = torch.fx.node.map_arg(node.args, lambda a: values[a])
    kwargs = torch.fx.node.map_arg(node.kwargs, lambda a: values[a])
    try:
        if node.op == "call_method":
            env[node] = getattr(args[0], str(node.target))(*args[1:], **kwargs)
        else:
            env[node] = node.target(*args, **kwargs)  # type: ignore[operator]  # (a call_function's target)
    except Exception:  # noqa: BLE001 - not evaluable: the node is read as an operation, and refused
        env[node] = None
    return env[node]


def on_trials(node: Any, given: Any, trials: list[Any], env: dict[Any, Any]) -> list[Any]:
    """``node``'s value computed from ``given`` set to each of the ``trials`` in turn (and ``env``)."""
    return [evaluate(node, {**env, given: value}) for value in trials]


def drop_open_masks(graph: Any) -> None:
    """In an exported program: an attention mask computed from constants alone that lets every query attend to
    every key (all True, or an additive mask of zeros) is no mask; the ``scaled_dot_product_attention`` call
    is given None instead (Hugging Face models build such a mask from ``arange`` when exported without one)."""
    for n in _attention_calls(graph):
        position = 3 if len(n.args) > 3 else None
        mask = n.args[3] if position is not None else n.kwargs.get("attn_mask")
        if not isinstance(mask, torch.fx.Node):
            continue
        value = evaluate(mask, {})
        open_mask = isinstance(value, torch.Tensor) and (
            bool(value.all()) if value.dtype == torch.bool else bool((value == 0).all())
        )
        if open_mask:
            _give_mask(n, position, None)


def padding_mask_reads(graph: Any, batch: int) -> Any:
    """In an exported program whose forward's second argument is a padding mask (N, L), 1 for a token and 0
    for padding: each ``scaled_dot_product_attention`` mask computed from it alone is checked to be that
    mask's keys, broadcast over the queries and heads (True where the key is a token), on the probe masks and
    random ones; the call is then given the padding mask itself, so its module reads it. Returns the mask's
    placeholder (None without a second argument). A mask that is anything else stays, and is refused."""
    from .._compare import padding_masks

    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) < 2:
        return None
    mask = placeholders[1]  # (the token types, where the forward takes them, come after it)
    length = int(mask.meta["val"].shape[1]) if "val" in mask.meta else 0
    rng = np.random.default_rng(0)
    trials = [padding_masks(batch, length), np.ones((batch, length), dtype=np.int64)]
    for _ in range(4):
        m = (rng.random((batch, length)) < 0.6).astype(np.int64)
        m[:, 0] = 1
        trials.append(m)
    values = [torch.from_numpy(m) for m in trials]
    for n in _attention_calls(graph):
        position = 3 if len(n.args) > 3 else None
        given = n.args[3] if position is not None else n.kwargs.get("attn_mask")
        if not isinstance(given, torch.fx.Node) or given is mask:
            continue
        if all(_keys_of(got, value) for got, value in zip(on_trials(given, mask, values, {}), values)):
            _give_mask(n, position, mask)
    return mask


def _attention_calls(graph: Any) -> list[Any]:
    return [
        n
        for n in graph.nodes
        if n.op == "call_function" and getattr(n.target, "__name__", "") == "scaled_dot_product_attention.default"
    ]


def _give_mask(call: Any, position: int | None, mask: Any) -> None:
    if position is not None:
        call.args = (*call.args[:3], mask, *call.args[4:])
    else:
        call.kwargs = {**call.kwargs, "attn_mask": mask}


def _keys_of(got: Any, value: Any) -> bool:
    """Whether ``got`` is True exactly where its key is a token of the padding mask ``value``:
    ``value[:, None, None, :] != 0`` broadcast to its shape."""
    if not isinstance(got, torch.Tensor) or got.dtype != torch.bool or got.dim() != 4:
        return False
    want = (value != 0)[:, None, None, :]
    try:
        return bool(torch.equal(got, want.expand(got.shape)))
    except RuntimeError:  # (not broadcastable: another shape)
        return False


def fixed_ids(node: Any, params: dict[Any, Any], fixed: set[Any], consts: dict[Any, Any]) -> Any:
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
    except LookupError:  # (the batch size read otherwise than by an expansion: not fixed)
        return None
    result = evaluate(node, env)
    if not isinstance(result, torch.Tensor) or result.is_floating_point() or result.is_complex():
        return None
    return result if result.numel() <= 10**6 else None


def fixed_embedding(m: Any, ids: Any, key: str, name: str, where: str) -> tuple[Any, dict[str, Any]]:
    """``nn.Embedding`` of fixed ids, the same for every sample: the positions 0..L-1 are a PositionEmbedding
    over the table's rows, one id for every token a TokenTypeEmbedding. (layer, state); anything else is
    refused."""
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


def types_embedding(m: Any, key: str, name: str, where: str) -> tuple[Any, dict[str, Any]]:
    """An ``nn.Embedding`` looking up the model's token types: a TokenTypeEmbedding that reads them. (layer,
    state); an embedding with options that change the lookup is refused."""
    problems = [
        (m.max_norm is not None, f"max_norm={m.max_norm}"),
        (m.scale_grad_by_freq, "scale_grad_by_freq=True"),
        (m.padding_idx is not None, f"padding_idx={m.padding_idx} (a row that gets no gradient)"),
    ]
    bad = [what for fails, what in problems if fails]
    if bad:
        raise UnsupportedLayerError(
            f"from_torch: {where}: an nn.Embedding of the token types with {bad[0]} is not supported"
        )
    keys = () if key == f"{name}.weight" else (("weight", key),)
    layer = TokenTypeEmbedding(int(m.num_embeddings), int(m.embedding_dim), token_types=True, name=name, keys=keys)
    return layer, {f"{name}.weight": m.weight}


def id_positions(node: Any, ids: Any, m: Any, vocabulary: int, where: str, known: Any) -> Any:
    """For an ``nn.Embedding`` call on ``node``, integers computed from the token ids ``ids`` (below
    ``vocabulary``) and the buffers and sizes ``known(batch)`` gives for a batch of that many:

    - a tensor of one id, when ``node`` only reshapes or looks up values of a buffer whose values are all
      that id (RoBERTa's token types: zeros gathered at the positions), which holds whatever the ids are;
    - a PaddedPositions layer when ``node`` is computed as RoBERTa computes its positions (see
      :func:`_of_padding`) and is, on random ids with padding among them, those positions for the table's
      ``padding_idx``;
    - anything else is refused (an id computed from the ids, such as ``ids == 5``, is never taken for a
      constant because it was one on the ids tried)."""
    pad = m.padding_idx
    length = int((ids.meta.get("xconv_shape") or (0, 0))[1])
    rng = np.random.default_rng(0)
    trials = []
    for n in (3, 4, 3, 5):  # (batches of several sizes: a computation that depends on the batch differs)
        batch = rng.integers(0, vocabulary, (n, length))
        batch[rng.random(batch.shape) < 0.3] = 0 if pad is None else pad
        trials.append(torch.from_numpy(batch))
    one = _uniform(node, known(len(trials[0])))
    values = [evaluate(node, {**known(len(value)), ids: value}) for value in trials]
    if one is not None:
        if all(isinstance(v, torch.Tensor) and not v.is_floating_point() and bool((v == one).all()) for v in values):
            return values[0]
    elif (
        pad is not None
        and _of_padding(node, ids, int(pad))
        and all(_padded_positions(got, value, pad) for got, value in zip(values, trials))
    ):
        return PaddedPositions(int(pad))
    raise UnsupportedLayerError(
        f"from_torch: {where} looks up ids computed from the token ids, which are neither the positions of the "
        "tokens that are not padding (RoBERTa's, counted from the table's padding_idx + 1) nor values of a buffer "
        "that holds one id"
    )


#: operations that keep their first argument's values (casts and copies), passed over in RoBERTa's positions
_CASTS = {"int", "long", "to", "type_as", "_to_copy", "clone", "contiguous"}


def _op(n: Any) -> str:
    if not isinstance(n, torch.fx.Node) or n.op not in ("call_function", "call_method"):
        return ""
    name = str(n.target) if n.op == "call_method" else getattr(n.target, "__name__", "")
    return name.split(".")[0]


def _bare(n: Any) -> Any:
    """``n`` without the casts and copies around it, and without ``+ 0`` (Hugging Face adds its cache length)."""
    while True:
        name = _op(n)
        cast = name in _CASTS and bool(n.args)
        plus_zero = name == "add" and len(n.args) == 2 and n.args[1] == 0 and not n.kwargs
        if not (cast or plus_zero):
            return n
        n = n.args[0]


def _of_padding(node: Any, ids: Any, pad: int) -> bool:
    """Whether ``node`` is computed exactly as RoBERTa computes its positions from the ids, up to casts:
    ``cumsum(m, dim=1) * m + pad`` with ``m = ids != pad`` (either factor first). It is then a function of the
    padding alone, which the trials check on random ids with padding among them; any other computation (an id
    treated apart, say a separator counted as padding, or another rule of the padding) is not taken for it."""

    def is_mask(n: Any) -> bool:
        n = _bare(n)
        return _op(n) == "ne" and list(n.args) == [ids, pad] and not n.kwargs

    def is_count(n: Any) -> bool:
        n = _bare(n)
        dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else None) if _op(n) == "cumsum" else None
        extra = {k for k in n.kwargs if k != "dim"} if _op(n) == "cumsum" else {"x"}
        return dim == 1 and not extra and len(n.args) <= 2 and is_mask(n.args[0])

    top = _bare(node)
    if _op(top) != "add" or len(top.args) != 2 or top.kwargs:
        return False
    product, offset = top.args if top.args[1] == pad else top.args[::-1]
    product = _bare(product)
    if offset != pad or _op(product) != "mul" or len(product.args) != 2 or product.kwargs:
        return False
    a, b = product.args
    return is_mask(a) and is_count(b) or is_mask(b) and is_count(a)


def _padded_positions(got: Any, value: Any, pad: int) -> bool:
    if not isinstance(got, torch.Tensor) or got.shape != value.shape or got.is_floating_point():
        return False
    tokens = (value != pad).long()
    return bool(torch.equal(got.long(), torch.cumsum(tokens, dim=1) * tokens + pad))


def _uniform(node: Any, known: dict[Any, Any]) -> int | None:
    """The one value of every element of ``node``, when that follows from the graph alone: ``node`` is
    computed from buffers and sizes alone and all its values are equal, or it reshapes, selects or looks up
    (gathers at any indices) the values of such a node. None otherwise."""
    value = evaluate(node, dict(known))
    if isinstance(value, torch.Tensor):
        flat = value.reshape(-1)
        if value.is_floating_point() or not flat.numel() or not bool((flat == flat[0]).all()):
            return None
        return int(flat[0])
    if not isinstance(node, torch.fx.Node) or node.op not in ("call_function", "call_method") or not node.args:
        return None
    name = str(node.target) if node.op == "call_method" else getattr(node.target, "__name__", "")
    name = "getitem" if node.target is operator.getitem else name.split(".")[0]
    return _uniform(node.args[0], known) if name in _SAME_VALUES else None


def from_ids(node: Any, ids: Any, computed: set[Any], consts: dict[Any, Any], fixed: set[Any]) -> bool:
    """Whether ``node`` is an integer tensor computed from the token ids ``ids`` (and sizes and buffers) alone,
    by an operation (not a module)."""
    if node.op not in ("call_function", "call_method") or not node.meta.get("xconv_integer"):
        return False
    inputs = node.all_input_nodes
    return any(a is ids or a in computed for a in inputs) and all(
        a is ids or a in computed or a in consts or a in fixed for a in inputs
    )
