"""Attention written out in a traced or exported torch forward, read as :class:`~xconv.DotProductAttention`.

A forward that computes attention itself (timm's PVT v2 and Twins, Hugging Face's SegFormer, xconv's own
built models) splits token tensors (N, L, E) into heads, calls ``F.scaled_dot_product_attention`` on them
and merges the heads back:

- ``t.reshape(N, L, h, d).transpose(1, 2)`` (or ``.permute(0, 2, 1, 3)``): the heads of the tokens t;
- ``t.reshape(N, L, P, h, d).permute(2, 0, 3, 1, 4)`` then ``unbind(0)`` or ``[i]``: P packed parts (q, k, v
  side by side, each head by head), part i the heads of ``t[:, :, i*h*d:(i+1)*h*d]`` (a Narrow);
- ``F.scaled_dot_product_attention(q, k, v)`` of three such head tensors: the attention, of (N, h, L, dv); or
  the same written by hand: ``(q * c) @ k.transpose(-2, -1)`` (or the scores times c), ``softmax(-1)``, a
  dropout of p = 0, ``@ v``;
- ``o.transpose(1, 2).reshape(N, L, h * dv)``: its tokens.

Also heads split by size (``view(N, L, h, -1).split([kd, kd, vd], dim=3)``: Narrows with ``groups``), keys
permuted directly (``k.permute(0, 2, 3, 1)``), heads of an NCHW map's channels over its pixels, and a learned
bias ``table[:, index]`` added to the scores (:mod:`.torch_head_bias`).

Each step is checked against the shapes of one run; anything else done to a tensor in between (a mask, a
dropout of the weights, a causal flag, a head tensor read by another operation) is refused by name.
"""

from __future__ import annotations

import math
from typing import Any, cast

from ..backends._torch_env import nn, torch
from ..errors import UnsupportedLayerError
from ..spec import Narrow, ToMap, ToTokens
from ._graph import Names, Raw
from ._torch_mutation import describe
from .torch_head_bias import AttentionBiases
from .torch_shapes import BATCH, ShapeOps

F = torch.nn.functional

__all__ = ["Heads"]


class Heads(AttentionBiases):
    """The head splits, attentions and merges of one traced graph, step by step; :meth:`step` handles a node
    that is one of them and records the spec nodes it makes."""

    def __init__(
        self,
        module: nn.Module,
        gm: Any,
        shapes: ShapeOps,
        nodes: list[Raw],
        names: Names,
        x: tuple[Any, ...],
        params: dict[Any, Any] | None = None,
        source: dict[Any, str] | None = None,
    ) -> None:
        self.module, self.gm, self.shapes, self.nodes, self.names = module, gm, shapes, nodes, names
        self.x = x  # (a probe batch: the training-mode run that shows an attention's dropout)
        self.params = {} if params is None else params  # get_attr nodes (and views of them): their tensors
        self.source = {} if source is None else source  # a tensor's storage -> its state_dict key
        self.state: dict[str, Any] = {}  # the attentions' bias tables by canonical key
        self.fixed: dict[str, Any] = {}  # ... and their indices, where the module keeps them in its state_dict
        self.biases: dict[Any, tuple[Any, Any]] = {}  # table[:, index]: (the table's node, the index's node)
        self.head_parts: dict[Any, tuple[str, int, int, list[int]]] = {}  # heads split by size along d
        self.keys_direct: dict[Any, tuple[int, int]] = {}  # (N, L, h, d) permuted to (N, h, d, L): keys^T
        self.grouped: dict[tuple[int, int, int, int], int] = {}  # (node, start, length, groups) -> its Narrow
        # heads of an NCHW map's channels over its pixels (Visformer's; EfficientFormer V2 writes its attention
        # so too, but mixes its heads, which is refused): the map's tokens
        self.map_packed: dict[Any, tuple[Any, int, int, int]] = {}  # (N, P, h, d, H*W): (map node, P, h, d)
        self.map_heads: dict[Any, tuple[int, int]] = {}  # (N, h, d, H*W): (its tokens' node, h)
        self.map_merging: dict[Any, int] = {}  # an attention's (N, h, dv, L): its node
        self.tokens_of: dict[Any, int] = {}  # a map's node -> the ToTokens node made of it
        self._state_keys: set[str] | None = None
        self.trained: list[Any] | None | bool = False  # its sdpa calls (False: not run yet)
        self.attended = 0  # the sdpa calls read so far
        self.viewed: dict[Any, tuple[int, int]] = {}  # tokens viewed as (N, L, h, d): (their node, h)
        self.split: dict[Any, tuple[int, int]] = {}  # (N, h, L, d): the heads of the spec node's features
        self.packed_view: dict[Any, tuple[int, int, int, int]] = {}  # (N, L, P, h, d): (node, P, h, d)
        self.packed: dict[Any, tuple[int, int, int, int]] = {}  # (P, N, h, L, d)
        self.parts: dict[tuple[int, int, int], int] = {}  # (node, start, length) -> its Narrow node
        self.out: dict[Any, tuple[int, int]] = {}  # an attention's (N, h, L, dv): (its node, h)
        self.merging: dict[Any, int] = {}  # ... transposed to (N, L, h, dv)
        # attention written by hand: q (times a number), q @ k.transpose(-2, -1) (times a number), softmax(-1),
        # a dropout of p = 0, then @ v
        self.factor: dict[Any, float] = {}  # heads multiplied by a number: the number
        self.keys_t: dict[Any, Any] = {}  # k.transpose(-2, -1): k
        # q @ k^T (times a number, plus a learned bias): (q, k, the number, the bias's node or None)
        self.scores: dict[Any, tuple[Any, Any, float, Any]] = {}
        self.probs: dict[Any, tuple[Any, Any, float, Any]] = {}  # their softmax over the keys
        self.dropped: dict[Any, float] = {}  # weights dropped at p in training (a dropout that follows the mode)

    def _states(self) -> tuple[dict[Any, Any], ...]:
        return (
            self.viewed, self.split, self.packed_view, self.packed, self.out, self.merging, self.keys_t,
            self.scores, self.probs, self.head_parts, self.keys_direct, self.biases, self.map_packed,
            self.map_heads, self.map_merging,
        )  # fmt: skip

    def pending(self, node: Any) -> bool:
        return any(node in d for d in self._states())

    def step(self, node: Any, args: list[Any], where: str) -> bool:
        """Whether ``node`` is a step of a head split, an attention or a merge (recorded); refuses any other
        use of a tensor in the middle of one."""
        index = self.shapes.index
        op = node.op
        method = (
            node.target
            if op == "call_method"
            else getattr(node.target, "__name__", "")
            if op == "call_function"
            else ""
        )
        src = args[0] if args else None
        if method == "scaled_dot_product_attention":
            return self._attention(node, args, where)
        if self._bias_table(node, method, args):
            return True
        nodes = [a if isinstance(a, torch.fx.Node) else None for a in args[:2]]
        if method == "mul" and len(args) == 2 and not self.pending(nodes[0]) and self.pending(nodes[1]):
            src, args = args[1], [args[1], args[0]]  # (c * q)
        if src is None or not isinstance(src, torch.fx.Node):
            return False
        if (
            op == "call_module"
            and self.pending(src)
            and self.dropout_call(node, src, self.gm.get_submodule(node.target))
        ):
            return True
        if self.pending(src):
            if method == "size" or method == "getattr" and len(args) == 2 and args[1] == "shape":
                shape = self.shapes.shape(src)
                if shape is None:
                    raise UnsupportedLayerError(f"from_torch: {where}: the size of a head tensor is not known")
                sizes = (BATCH, *shape[1:])
                dim = self.shapes.resolve(args[1] if len(args) > 1 and method == "size" else node.kwargs.get("dim"))
                self.shapes.consts[node] = sizes if dim is None else sizes[dim]
                return True
            if method == "contiguous":
                for state in (*self._states(), self.factor, self.dropped):
                    if src in state:
                        state[node] = state[src]
                return True
            if self._continue(node, src, method, args):
                return True
            if src in self.biases:
                raise UnsupportedLayerError(
                    f"from_torch: {where} reads an attention bias table[:, index]; supported: only added to the "
                    "scaled scores, (q @ k.transpose(-2, -1)) * c + bias, or given as sdpa's attn_mask"
                )
            raise UnsupportedLayerError(
                f"from_torch: {where} reads a tensor of attention heads; supported: the heads split out by "
                "t.reshape(N, L, heads, d).transpose(1, 2) (or packed, reshape(N, L, P, heads, d).permute(2, 0, 3, "
                "1, 4)), read by F.scaled_dot_product_attention (or softmax((q * c) @ k.transpose(-2, -1), -1) @ v), "
                "and merged back by o.transpose(1, 2).reshape(N, L, heads * d)"
            )
        if method not in ("view", "reshape") or src not in index or src in self.shapes.nhwc:
            return False
        shape = self.shapes.shape(src)
        if shape is not None and len(shape) == 4:
            return self._map_view(node, src, shape, self.shapes._dims(args))
        if shape is None or len(shape) != 3:
            return False
        _, length, e = shape
        dims = self.shapes._dims(args)
        if len(dims) == 4 and dims[0] is BATCH and dims[1] in (length, -1):
            h, d = dims[2], dims[3]
            h = e // d if h == -1 and isinstance(d, int) and d > 0 and e % d == 0 else h
            if isinstance(h, int) and h > 0 and (d == -1 or isinstance(d, int) and h * d == e) and e % h == 0:
                self.viewed[node] = (index[src], h)
                return True
        if len(dims) == 5 and dims[0] is BATCH and dims[1] in (length, -1):
            p, h, d = dims[2], dims[3], dims[4]
            if all(isinstance(v, int) and v > 0 for v in (p, h)) and e % (p * h) == 0 and d in (-1, e // (p * h)):
                self.packed_view[node] = (index[src], p, h, e // (p * h))
                return True
        return False

    def _continue(self, node: Any, src: Any, method: str, args: list[Any]) -> bool:
        """The next step from a pending tensor ``src``; False where ``node`` is not one."""
        dims = self.shapes._dims(args) if method in ("permute", "view", "reshape") else ()
        axes = self.shapes.resolve(list(args[1:3])) if method == "transpose" else []
        swap = len(axes) == 2 and all(isinstance(d, int) for d in axes) and sorted(d % 4 for d in axes) == [1, 2]
        swap = swap or method == "permute" and dims == (0, 2, 1, 3)
        if src in self.viewed and swap:
            self.split[node] = self.viewed[src]
            return True
        swap_last = len(axes) == 2 and all(isinstance(d, int) for d in axes) and sorted(d % 4 for d in axes) == [2, 3]
        swap_last = swap_last or method == "permute" and dims == (0, 1, 3, 2)
        if self._map_step(node, src, method, dims, swap_last):
            return True
        if src in self.viewed and method == "permute" and dims == (0, 2, 3, 1):  # (N, h, d, L): keys, transposed
            self.keys_direct[node] = self.viewed[src]
            self.keys_t[node] = node
            return True
        if (src in self.viewed or src in self.split) and method == "split":
            return self._split_heads(node, src, args)
        if src in self.head_parts and method == "getitem":
            return self._head_part(node, src, args)
        if src in self.packed_view and method == "permute" and dims == (2, 0, 3, 1, 4):
            self.packed[node] = self.packed_view[src]
            return True
        if src in self.packed and method == "unbind":
            dim = self.shapes.resolve(args[1]) if len(args) > 1 else node.kwargs.get("dim", 0)
            if dim == 0:
                self.packed[node] = self.packed[src]  # (its items are read by [i] as the packed tensor's)
                return True
            return False
        if src in self.packed and method == "getitem":
            i = self.shapes.resolve(args[1])
            i = i[0] if isinstance(i, tuple) and len(i) == 1 else i  # (an exported program's select: (i,))
            tokens, p, h, d = self.packed[src]
            if not isinstance(i, int) or not -p <= i < p:
                return False
            i %= p
            part = (tokens, i * h * d, h * d)
            if part not in self.parts:
                name = self.names.take(f"{node.name}_part")
                self.nodes.append(Raw(name, "layer", [tokens], layer=Narrow(2, *part[1:], name=name)))
                self.parts[part] = len(self.nodes) - 1
            self.split[node] = (self.parts[part], h)
            return True
        if self._by_hand(node, src, method, args):
            return True
        if src in self.out and method in ("view", "reshape"):  # (N, h, L, dv) viewed as itself
            shape = self.shapes.shape(src)
            assert shape is not None
            if len(dims) == 4 and dims[0] is BATCH and dims[1] in (shape[1], -1) and tuple(dims[2:]) == shape[2:]:
                self.out[node] = self.out[src]
                return True
        if src in self.out and swap:
            self.merging[node] = self.out[src][0]
            return True
        if src in self.merging and method in ("view", "reshape", "flatten"):
            shape = self.shapes.shape(src)
            assert shape is not None
            _, length, h, dv = shape
            if method == "flatten":
                given = {**dict(zip(("start_dim", "end_dim"), args[1:])), **node.kwargs}
                start, end = (self.shapes.resolve(given.get(k, v)) for k, v in (("start_dim", 0), ("end_dim", -1)))
                ok = start in (2, -2) and end in (-1, 3)
            else:
                ok = len(dims) == 3 and dims[0] is BATCH and dims[1] in (length, -1) and dims[2] in (h * dv, -1)
                ok = ok and not (dims[1] == -1 and dims[2] == -1)
            if ok:
                self.shapes.index[node] = self.merging[src]
                return True
        return False

    def _map_view(self, node: Any, src: Any, shape: tuple[int, ...], dims: tuple[Any, ...]) -> bool:
        """An NCHW map's channels viewed as heads over its pixels: ``x.reshape(N, P, h, d, -1)`` (P packed parts,
        each head by head) or ``x.reshape(N, h, d, -1)``; False for other views."""
        _, c, hh, ww = shape
        if len(dims) not in (4, 5) or dims[0] is not BATCH or dims[-1] not in (-1, hh * ww) or min(hh, ww) == 1:
            return False  # (on a map of one row or column H*W is W or H: a view of it is not told apart)
        middle = list(dims[1:-1])
        known = math.prod(v for v in middle if v != -1)
        if middle.count(-1) == 1 and dims[-1] != -1 and known > 0 and c % known == 0:
            middle[middle.index(-1)] = c // known  # (the head size given as -1: reshape(N, h, -1, H*W))
        if not all(isinstance(v, int) and v > 0 for v in middle) or math.prod(middle) != c:
            return False
        dims = (dims[0], *middle, dims[-1])
        if len(dims) == 5:
            self.map_packed[node] = (src, *dims[1:4])
            return True
        if len(dims) == 4:
            self.map_heads[node] = (self._map_tokens(src), dims[1])
            self.keys_direct[node], self.keys_t[node] = self.map_heads[node], node  # ((N, h, d, L): keys^T)
            return True
        return False

    def _map_tokens(self, src: Any) -> int:
        """The tokens (N, H*W, C) of the map ``src``, pixels row by row: a ToTokens node (one per map)."""
        if src not in self.tokens_of:
            name = self.names.take(f"{src.name}_tokens")
            self.nodes.append(Raw(name, "layer", [self.shapes.index[src]], layer=ToTokens(name=name)))
            self.tokens_of[src] = len(self.nodes) - 1
        return self.tokens_of[src]

    def _map_step(self, node: Any, src: Any, method: str, dims: tuple[Any, ...], swap_last: bool) -> bool:
        """The next step from a map's heads, or an attention's heads read back as a map; False otherwise."""
        if src in self.map_packed and method == "permute" and dims == (1, 0, 2, 4, 3):  # (P, N, h, L, d)
            m, p, h, d = self.map_packed[src]
            self.packed[node] = (self._map_tokens(m), p, h, d)
            return True
        if src in self.map_heads and swap_last:  # (N, h, L, d)
            self.split[node] = self.map_heads[src]
            return True
        if src in self.map_heads and method == "permute" and dims == (0, 1, 2, 3):
            self.map_heads[node] = self.map_heads[src]
            self.keys_direct[node], self.keys_t[node] = self.map_heads[src], node
            return True
        if src in self.out and swap_last:  # (N, h, dv, L): to be read as a map
            self.map_merging[node] = self.out[src][0]
            return True
        if src in self.map_merging and method in ("view", "reshape"):
            shape = self.shapes.shape(src)
            assert shape is not None
            _, h, dv, length = shape
            ok = len(dims) == 4 and dims[0] is BATCH and dims[1] in (-1, h * dv) and -1 not in dims[2:]
            if ok and isinstance(dims[2], int) and isinstance(dims[3], int) and dims[2] * dims[3] == length:
                name = self.names.take(f"{node.name}_map")
                layer = ToMap(dims[2], dims[3], name=name)
                self.nodes.append(Raw(name, "layer", [self.map_merging[src]], layer=layer))
                self.shapes.index[node] = len(self.nodes) - 1
                return True
        return False

    def _split_heads(self, node: Any, src: Any, args: list[Any]) -> bool:
        """``t.split(sizes, dim=-1)`` of heads, (N, L, h, d) or (N, h, L, d): each head's features cut into
        parts side by side (timm's ``qkv.view(N, L, h, -1).split([kd, kd, vd], dim=3)``)."""
        node_kwargs = {"split_size" if k == "split_size_or_sections" else k: v for k, v in node.kwargs.items()}
        given = {**dict(zip(("split_size", "dim"), self.shapes.resolve(list(args[1:])))), **node_kwargs}
        sizes, dim = self.shapes.resolve(given.get("split_size")), self.shapes.resolve(given.get("dim", 0))
        shape = self.shapes.shape(src)
        if shape is None or len(shape) != 4 or dim not in (3, -1):
            return False
        d = shape[3]
        if isinstance(sizes, int) and not isinstance(sizes, bool) and sizes > 0:
            sizes = [sizes] * (d // sizes) + ([d % sizes] if d % sizes else [])
        sizes = list(sizes) if isinstance(sizes, (list, tuple)) else None
        if not sizes or not all(isinstance(v, int) and v > 0 for v in sizes) or sum(sizes) != d:
            return False
        state, (tokens, h) = ("viewed", self.viewed[src]) if src in self.viewed else ("split", self.split[src])
        self.head_parts[node] = (state, tokens, h, sizes)
        return True

    def _head_part(self, node: Any, src: Any, args: list[Any]) -> bool:
        """Part i of heads split by size: the heads of a Narrow with ``groups=heads`` of their tokens."""
        state, tokens, h, sizes = self.head_parts[src]
        i = self.shapes.resolve(args[1])
        if not isinstance(i, int) or isinstance(i, bool) or not -len(sizes) <= i < len(sizes):
            return False
        i %= len(sizes)
        part = (tokens, sum(sizes[:i]), sizes[i], h)
        if part not in self.grouped:
            name = self.names.take(f"{node.name}_part")
            self.nodes.append(Raw(name, "layer", [tokens], layer=Narrow(2, *part[1:3], groups=h, name=name)))
            self.grouped[part] = len(self.nodes) - 1
        (self.viewed if state == "viewed" else self.split)[node] = (self.grouped[part], h)
        return True

    def _by_hand(self, node: Any, src: Any, method: str, args: list[Any]) -> bool:
        """A step of attention written by hand (timm's and Hugging Face's non-fused paths); False otherwise."""
        other = args[1] if len(args) > 1 else None
        number = self.shapes.resolve(other)
        number = float(number) if isinstance(number, (int, float)) and not isinstance(number, bool) else None
        if method in ("mul", "truediv") and number is not None and len(args) == 2 and not node.kwargs:
            factor = number if method == "mul" else 1.0 / number if number else None
            if factor is not None and src in self.split:  # q * c
                self.split[node] = self.split[src]
                self.factor[node] = self.factor.get(src, 1.0) * factor
                return True
            if factor is not None and src in self.scores and self.scores[src][3] is None:  # (q @ k^T) * c
                q, k, f, _ = self.scores[src]
                self.scores[node] = (q, k, f * factor, None)
                return True
            return False
        if method == "add" and len(args) == 2 and not node.kwargs:  # scores + bias (either order)
            a, b = args if args[0] in self.scores else args[::-1]
            if a in self.scores and b in self.biases and self.scores[a][3] is None:
                self.scores[node] = (*self.scores[a][:3], b)
                return True
            return False
        if src in self.split and method == "transpose":
            axes = self.shapes.resolve(list(args[1:3]))
            if (
                all(isinstance(d, int) for d in axes)
                and sorted(d % 4 for d in axes) == [2, 3]
                and src not in self.factor
            ):
                self.keys_t[node] = src
                return True
            return False
        if method == "matmul" and len(args) == 2 and not node.kwargs:
            if src in self.split and other in self.keys_t:
                self.scores[node] = (src, self.keys_t[other], self.factor.get(src, 1.0), None)
                return True
            if src in self.probs and other in self.split and other not in self.factor:
                q, k, f, bias = self.probs[src]
                return self._attend(node, q, k, f, other, self.dropped.get(src, 0.0), bias)
            return False
        if src in self.scores and method == "softmax":
            values = {**dict(zip(("dim", "_stacklevel", "dtype"), self.shapes.resolve(list(args[1:])))), **node.kwargs}
            if values.get("dim") in (-1, 3) and values.get("dtype") is None:
                self.probs[node] = self.scores[src]
                return True
            return False
        if src in self.probs and method == "dropout" and src not in self.dropped:  # F.dropout(p)
            values = {**dict(zip(("p", "training"), self.shapes.resolve(list(args[1:])))), **node.kwargs}
            p, how = values.get("p", 0.5), node.meta.get("xconv_dropout")
            if isinstance(p, (int, float)) and (p == 0 or how in ("never", "mode")):
                self.probs[node] = self.probs[src]
                if p and how == "mode":  # (drops in training only: the attention's dropout)
                    self.dropped[node] = float(p)
                return True
        return False

    def dropout_call(self, node: Any, src: Any, m: Any) -> bool:
        """An ``nn.Dropout`` module called on attention weights: the attention's dropout (p = 0: none)."""
        if src in self.probs and type(m) is nn.Dropout and src not in self.dropped:
            self.probs[node] = self.probs[src]
            if m.p > 0:
                self.dropped[node] = float(m.p)
            return True
        return False

    def _heads_of(self, t: Any) -> tuple[int, int]:
        """(the spec node, heads) of queries, keys or values split into heads (keys also transposed)."""
        return self.split[t] if t in self.split else self.keys_direct[t]

    def _attend(self, node: Any, q: Any, k: Any, factor: float, v: Any, dropout: float, bias: Any = None) -> bool:
        heads = {self._heads_of(t)[1] for t in (q, k, v)}
        q_shape, v_shape = self.shapes.shape(q), self.shapes.shape(v)
        if len(heads) != 1 or q_shape is None or v_shape is None or not factor > 0:
            return False
        self._trained(describe(node))  # (a training-mode sdpa call in its place would be another function)
        if not dropout:
            self._no_hidden_dropout(node, describe(node))
        scale = None if factor == float(q_shape[-1] ** -0.5) else factor
        h = heads.pop()
        name, fields = (
            (self.names.take(node.name), {})
            if bias is None
            else self._bias(bias, h, q_shape[2], v_shape[2], describe(node))
        )
        payload = (h, scale, dropout, fields)
        inputs = [self._heads_of(t)[0] for t in (q, k, v)]
        self.nodes.append(Raw(name, "attn", inputs, payload=payload, owned=True))
        self.out[node] = (len(self.nodes) - 1, h)
        return True

    def _attention(self, node: Any, args: list[Any], where: str) -> bool:
        values = {**dict(zip(("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale"), args))}
        values.update(self.shapes.resolve(dict(node.kwargs)))
        q, k, v = (values.get(n) for n in ("query", "key", "value"))
        if not all(t in self.split for t in (q, k, v)):
            if any(self.pending(t) for t in (q, k, v)):
                raise UnsupportedLayerError(
                    f"from_torch: {where}: queries, keys and values must each be heads split out of tokens"
                )
            return False
        mask = values.get("attn_mask")
        problems = [
            (mask is not None and mask not in self.biases, "a mask"),
            (bool(values.get("is_causal")), "is_causal=True"),
            (bool(values.get("enable_gqa")), "enable_gqa=True"),
            (values.get("dropout_p", 0.0) not in (0, 0.0), f"dropout_p={values.get('dropout_p')}"),
            (len({self.split[t][1] for t in (q, k, v)}) != 1, "queries, keys and values of different head counts"),
        ]
        bad = [what for fails, what in problems if fails]
        if bad:
            raise UnsupportedLayerError(f"from_torch: {where}: scaled_dot_product_attention with {bad[0]}")
        dropout = self._training_dropout(where)
        if not dropout:
            self._no_hidden_dropout(node, where)
        heads = self.split[q][1]
        scale = values.get("scale")
        q_shape = self.shapes.shape(q)
        assert q_shape is not None
        if k in self.factor or v in self.factor:
            raise UnsupportedLayerError(f"from_torch: {where}: keys or values multiplied by a number")
        if q in self.factor and isinstance(scale, (int, float, type(None))):  # (q * c): the scale times c
            scale = (q_shape[-1] ** -0.5 if scale is None else float(scale)) * self.factor[q]
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0):
            raise UnsupportedLayerError(f"from_torch: {where}: scaled_dot_product_attention with scale={scale!r}")
        if scale is not None and float(scale) == float(q_shape[-1] ** -0.5):
            scale = None  # (the default: d ** -0.5)
        fields: dict[str, Any] = {}
        if mask is None:
            name = self.names.take(node.name)
        else:
            v_shape = self.shapes.shape(v)
            assert v_shape is not None
            name, fields = self._bias(mask, heads, q_shape[2], v_shape[2], where)
        inputs = [self.split[t][0] for t in (q, k, v)]
        payload = (heads, None if scale is None else float(scale), dropout, fields)
        self.nodes.append(Raw(name, "attn", inputs, payload=payload, owned=True))
        self.out[node] = (len(self.nodes) - 1, heads)
        return True

    def _trained(self, where: str) -> list[tuple[float, tuple[Any, ...]]]:
        """The sdpa calls of one training-mode run of the module (the traced calls are the eval-mode ones), each
        (its dropout_p, the shapes it read); refused where some drop and they are not the traced calls one for
        one, by shape (which dropout is whose would not be known)."""
        if self.trained is False:
            self.trained = training_dropouts(self.module, self.x)
        if self.trained is None:
            raise UnsupportedLayerError(
                f"from_torch: {where}: the module's forward does not run in training mode, where its attention's "
                "dropout would show"
            )
        calls = cast(list[tuple[float, tuple[Any, ...]]], self.trained)
        traced = [
            tuple(tuple(self.shapes.shape(a) or ())[1:] for a in n.args[:3])
            for n in self.gm.graph.nodes
            if n.op == "call_function" and n.target is F.scaled_dot_product_attention
        ]
        if any(p for p, _ in calls) and [shape for _, shape in calls] != traced:
            raise UnsupportedLayerError(
                f"from_torch: {where}: in training mode the forward makes other attention calls ({len(calls)}) than "
                f"the traced ones ({len(traced)}), some of them dropping their weights: which dropout is whose is "
                "not known"
            )
        return calls

    def _training_dropout(self, where: str) -> float:
        """The dropout the next traced sdpa call applies to its weights in training (see :meth:`_trained`)."""
        calls = self._trained(where)
        k, self.attended = self.attended, self.attended + 1
        return calls[k][0] if k < len(calls) else 0.0

    def _no_hidden_dropout(self, node: Any, where: str) -> None:
        """Refuse an attention whose module holds a dropout of the weights that the traced (eval-mode) call
        does not show: a dropout module or rate that only the training forward passes to the attention."""
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        path = str(stack[-1][0]) if stack else ""  # (no stack: the forward of the model itself)
        try:
            owner = self.module.get_submodule(path)
        except AttributeError:
            owner = self.module
        called = {str(n.target) for n in self.gm.graph.nodes if n.op == "call_module"}
        for attr, value in vars(owner).items():
            if "drop" in attr.lower() and "path" not in attr.lower() and isinstance(value, float) and value > 0:
                raise UnsupportedLayerError(
                    f"from_torch: {where}: its module {path!r} has {attr}={value}, a dropout that neither the traced call "
                    "nor a training-mode run applies"
                )
        for attr, child in owner.named_children():
            if isinstance(child, nn.Dropout) and child.p > 0 and (f"{path}.{attr}" if path else attr) not in called:
                raise UnsupportedLayerError(
                    f"from_torch: {where}: its module {path!r} has {attr} = Dropout(p={child.p}), which neither the "
                    "traced call nor a training-mode run applies"
                )


def training_dropouts(module: nn.Module, x: tuple[Any, ...]) -> list[tuple[float, tuple[Any, ...]]] | None:
    """Each ``F.scaled_dot_product_attention`` call, in order, of one run of ``module`` in training mode on the
    batch ``x`` (its modes, buffers and the global random state put back): (its ``dropout_p``, the shapes of its
    queries, keys and values without the batch); None where that run fails."""
    from ._torch_mutation import StateGuard

    seen: list[tuple[float, tuple[Any, ...]]] = []

    class Calls(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if func is F.scaled_dot_product_attention:
                p = kwargs.get("dropout_p", args[4] if len(args) > 4 else 0.0)
                shapes = tuple(tuple(t.shape)[1:] for t in args[:3])
                seen.append((float(p) if isinstance(p, (int, float)) else 1.0, shapes))
            return func(*args, **kwargs)

    modes = [(m, m.training) for m in module.modules()]
    guard = StateGuard(module)
    try:
        module.train()
        with torch.no_grad(), torch.random.fork_rng(), Calls():
            module(*(t.clone() for t in x))
    except Exception:  # noqa: BLE001 - a forward that does not run in training mode: unknown
        return None
    finally:
        for m, was in modes:
            m.training = was
        guard.written()
    return seen
