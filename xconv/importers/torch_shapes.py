"""Shape-level operations of a traced or exported torch forward, with the shapes of one real run of the graph:
size arithmetic (the batch size stays symbolic), permutes to and from channels-last, views, slices, splits and
channel shuffles."""

from __future__ import annotations

import itertools
import operator
from typing import Any

import numpy as np

from ..backends._torch_env import torch
from ..errors import UnsupportedLayerError
from ..spec import (
    ELEMENTWISE,
    BatchNorm1d,
    ChannelLinear,
    ChannelShuffle,
    GlobalResponseNorm,
    LayerNorm,
    Linear,
    MaxPool2d,
    Narrow,
    PatchMerging,
    SelectToken,
    Softmax,
    ToMap,
    ToTokens,
    WindowAttention,
)

__all__ = ["BATCH", "NOT", "ShapeOps"]

BATCH = object()  # the batch size, symbolic: it stays free in the spec
NOT = object()  # not a size computation
_ARITHMETIC = {
    operator.floordiv: operator.floordiv,
    operator.mul: operator.mul,
    operator.add: operator.add,
    operator.sub: operator.sub,
}


class ShapeOps:
    """Shape-level operations of a traced forward, with the shapes torch.fx's shape propagation recorded:
    size arithmetic, permutes to and from channels-last, views, slices and channel shuffles."""

    def __init__(self, index: dict[Any, int], consts: dict[Any, Any], nhwc: set[Any]) -> None:
        self.index, self.consts, self.nhwc = index, consts, nhwc
        self.grouped: dict[Any, tuple[Any, int]] = {}  # x.view(N, g, C // g, H, W)
        self.swapped: dict[Any, tuple[Any, int]] = {}  # ... .transpose(1, 2)
        self.pieces: dict[Any, tuple[Any, int, list[tuple[int, int]]]] = {}  # x.chunk / x.split: (src, dim, parts)
        self.ncl: dict[Any, Any] = {}  # an NCHW map viewed as (N, C, H*W): the map
        self.transposed: dict[Any, Any] = {}  # tokens transposed to (N, C, L): the tokens
        self.pooled: set[Any] = set()  # the mean of transposed tokens, (N, C, 1): read as (N, C)

    def shape(self, node: Any) -> tuple[int, ...] | None:
        return getattr(node, "meta", {}).get("xconv_shape")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.resolve(v) for v in value)
        if isinstance(value, slice):
            return slice(self.resolve(value.start), self.resolve(value.stop), self.resolve(value.step))
        return self.consts.get(value, value) if isinstance(value, torch.fx.Node) else value

    def size_value(self, node: Any, args: list[Any]) -> Any:
        """The value of a size computation (x.size(), x.shape[1], c // 2), or NOT."""
        if node.op == "call_method" and node.target == "size" and args and args[0] in self.index:
            dims = self._sizes(args[0])
            dim = self.resolve(args[1]) if len(args) > 1 else self.resolve(node.kwargs.get("dim"))
            if dims is None:
                return BATCH if dim == 0 else NOT
            return dims if dim is None else dims[dim]
        if (
            node.op == "call_function"
            and node.target is getattr
            and len(args) == 2
            and args[1] == "shape"
            and (args[0] in self.index)
        ):
            dims = self._sizes(args[0])
            return dims if dims is not None else (BATCH,)
        if node.op == "call_function" and node.target is operator.getitem and args[0] in self.consts:
            value, i = self.consts[args[0]], self.resolve(args[1])
            if isinstance(value, tuple) and isinstance(i, int) and -len(value) <= i < len(value):
                return value[i]
            if isinstance(value, tuple) and isinstance(i, slice):  # x.shape[-2:]
                return value[i]
            return NOT
        if (
            node.op == "call_function"
            and node.target in _ARITHMETIC
            and len(args) == 2
            and any(a in self.consts for a in args)
        ):
            a, b = self.resolve(args[0]), self.resolve(args[1])
            if isinstance(a, int) and isinstance(b, int):
                return _ARITHMETIC[node.target](a, b)
        return NOT

    def _sizes(self, node: Any) -> tuple[Any, ...] | None:
        shape = self.shape(node)
        return None if shape is None or node in self.nhwc else (BATCH, *shape[1:])

    def refuse_nhwc(self, tensors: Any, where: str) -> None:
        if any(t in self.nhwc for t in tensors):
            raise UnsupportedLayerError(f"from_torch: {where} on a channels-last (permuted) tensor is not supported")

    def place(self, node: Any, src: Any, m: Any, layer: Any, where: str) -> Any:
        """Check a layer against its input's layout: on a channels-last tensor only per-pixel layers (LayerNorm,
        Linear -> ChannelLinear, elementwise); nn.LayerNorm and nn.Linear on an NCHW map act on W and are refused."""
        shape = self.shape(src)
        if isinstance(layer, (GlobalResponseNorm, WindowAttention, PatchMerging)):  # (written for one layout)
            from ..kinds.norm._torch import grn_channels_last
            from ..kinds.window._torch import channels_last_module

            written = grn_channels_last(m) if isinstance(layer, GlobalResponseNorm) else channels_last_module(m)
            if written != (src in self.nhwc):
                layout = "a channels-last" if src in self.nhwc else "an NCHW"
                raise UnsupportedLayerError(
                    f"from_torch: {where} is written for another layout than its input, {layout} map"
                )
            if src in self.nhwc:
                self.nhwc.add(node)
            return layer
        if src in self.nhwc:
            if isinstance(layer, Linear):
                assert layer.in_features is not None  # torch's Linear knows its input size
                layer = ChannelLinear(
                    layer.in_features, layer.out_features, bias=layer.bias, name=layer.name, keys=layer.keys
                )
            elif not (
                isinstance(layer, LayerNorm) or isinstance(layer, ELEMENTWISE) and not isinstance(layer, Softmax)
            ):
                raise UnsupportedLayerError(
                    f"from_torch: {where} on a channels-last (permuted) tensor is not supported; "
                    "between permutes only LayerNorm, Linear and elementwise layers"
                )
            self.nhwc.add(node)
            return layer
        if isinstance(layer, BatchNorm1d) and shape is not None and len(shape) != 2 and not _on_tokens(m):
            raise UnsupportedLayerError(
                f"from_torch: {where} normalises the channels C of an (N, C, L) tensor; supported on a flat (N, F) "
                "input, or on each feature of tokens as bn(x.flatten(0, 1)).reshape_as(x)"
            )
        own_map_norm = type(m).__name__ == "ChannelLayerNorm"
        if isinstance(layer, (LayerNorm, Linear)) and not own_map_norm and (shape is None or len(shape) not in (2, 3)):
            raise UnsupportedLayerError(
                f"from_torch: {where} acts on the last axis of a tensor of shape {shape}; supported over the features "
                "of a flat input or of tokens (N, L, E), or over channels between x.permute(0, 2, 3, 1) and "
                "x.permute(0, 3, 1, 2)"
            )
        return layer

    def reshuffle(self, node: Any, args: list[Any], where: str) -> Any:
        """For permutes, contiguous, views/reshapes of the shuffle idiom, chunk/split/narrow/slicing: None if
        not one of them; "pending" for an intermediate step; else (the tensor it reads, a layer or None for
        an alias)."""
        op, target = node.op, node.target
        src = args[0] if args else None
        method = target if op == "call_method" else getattr(target, "__name__", "") if op == "call_function" else ""
        is_torch = (
            op == "call_method"
            or op == "call_function"
            and target
            in (
                torch.permute,
                torch.transpose,
                torch.narrow,
                torch.chunk,
                torch.split,
                operator.getitem,
                torch.reshape,
                torch.flatten,
            )
        )
        if op == "call_function" and target is torch.nn.functional.pad and src in self.index:
            sizes = self.resolve(args[1] if len(args) > 1 else node.kwargs.get("pad"))
            if isinstance(sizes, (list, tuple)) and sizes and all(v == 0 for v in sizes):
                if src in self.nhwc:  # (a pad of nothing, on any layout: the tensor itself)
                    self.nhwc.add(node)
                return src, None
        if not is_torch:
            return None
        if method == "getitem" and src in self.pieces:
            base, dim, parts = self.pieces[src]
            start, length = parts[self.resolve(args[1])]
            return base, Narrow(dim, start, length)
        if src in self.swapped and method == "contiguous":
            self.swapped[node] = self.swapped[src]
            return "pending"
        if src in self.swapped and method in ("view", "reshape"):
            base, groups = self.swapped[src]
            c, h, w = self.shape(base)[1:]  # type: ignore[index]
            dims = self._dims(args)
            if dims in ((BATCH, -1, h, w), (BATCH, c, h, w)):
                return base, ChannelShuffle(groups)
            raise UnsupportedLayerError(
                f"from_torch: {where}: a view after a grouped transpose that is not a channel shuffle"
            )
        if src in self.grouped and method == "transpose" and sorted(self.resolve(args[1:3])) == [1, 2]:
            self.swapped[node] = self.grouped[src]
            return "pending"
        if src in self.ncl:
            return self._ncl_step(node, src, method, args, where)
        if src in self.transposed:
            return self._transposed_step(node, src, method, args, where)
        if src in self.pooled:  # (N, C, 1) read as (N, C): flatten(1), view(N, -1), squeeze(-1) are aliases
            values = {**dict(zip(("start_dim", "end_dim"), self.resolve(args[1:]))), **self.resolve(dict(node.kwargs))}
            flat = method == "flatten" and values.get("start_dim", 0) == 1 and values.get("end_dim", -1) in (-1, 2)
            squeeze = method == "squeeze" and self.resolve(args[1:]) in ([-1], [2])
            view = method in ("view", "reshape") and self._dims(args) in ((BATCH, -1), (BATCH, self.shape(src)[1]))  # type: ignore[index]
            if flat or squeeze or view:
                return src, None
            raise UnsupportedLayerError(
                f"from_torch: {where}: the mean of the tokens as (N, C, 1) is read only flattened"
            )
        if src not in self.index:
            return None
        shape = self.shape(src)
        tokens = self._map_as_tokens(node, src, shape, method, args)
        if tokens is not None:
            return tokens
        if shape is not None and len(shape) == 3 and method in ("view", "reshape") and src not in self.nhwc:
            dims = self._dims(args)  # tokens (N, H*W, C) viewed as a channels-last map (N, H, W, C)
            sizes = len(dims) == 4 and dims[0] is BATCH and all(isinstance(d, int) and d > 0 for d in dims[1:3])
            if sizes and dims[1] * dims[2] == shape[1] and dims[3] in (shape[2], -1):
                self.nhwc.add(node)
                return src, ToMap(dims[1], dims[2])
        if shape is not None and len(shape) == 3 and src not in self.nhwc and self._swaps_last_two(method, args):
            self.transposed[node] = src  # tokens (N, L, C) as (N, C, L): read back as a map next
            return "pending"
        if method == "contiguous" and len(args) == 1:
            if src in self.nhwc:
                self.nhwc.add(node)
            return src, None
        if method == "permute":
            perm = tuple(self._dims(args))
            if perm == (0, 2, 3, 1) and src not in self.nhwc and shape is not None and len(shape) == 4:
                self.nhwc.add(node)
                return src, None
            if perm == (0, 3, 1, 2) and src in self.nhwc:
                return src, None
            raise UnsupportedLayerError(
                f"from_torch: {where}: permute{perm} is supported only as x.permute(0, 2, 3, 1) "
                "of an NCHW map and back (x.permute(0, 3, 1, 2))"
            )
        if method == "getitem" and shape is not None and len(shape) == 4:
            sub = self._subsample(node, src, shape, self.resolve(args[1]))
            if sub is not None:
                return sub
        if src in self.nhwc or shape is None:
            return None
        rank = len(shape)
        if method in ("view", "reshape") and rank == 4:
            dims = self._dims(args)
            c, h, w = shape[1:]
            if (
                len(dims) == 5
                and dims[0] is BATCH
                and dims[3:] == (h, w)
                and isinstance(dims[1], int)
                and (isinstance(dims[2], int) and dims[1] * dims[2] == c and dims[1] > 0)
            ):
                self.grouped[node] = (src, dims[1])
                return "pending"
            return None
        if method in ("chunk", "split"):
            names = ("chunks", "dim") if method == "chunk" else ("split_size_or_sections", "dim")
            values = {**dict(zip(names, self.resolve(args[1:]))), **self.resolve(dict(node.kwargs))}
            dim = values.get("dim", 0)
            dim = dim % rank if isinstance(dim, int) and -rank <= dim < rank else 0
            if dim == 0:
                raise UnsupportedLayerError(f"from_torch: {where}: a split along the batch axis")
            size = shape[dim]
            if method == "chunk":
                step = -(-size // int(values["chunks"]))
                parts = [(a, min(step, size - a)) for a in range(0, size, step)]
            elif isinstance(values["split_size_or_sections"], int):
                step = values["split_size_or_sections"]
                parts = [(a, min(step, size - a)) for a in range(0, size, step)]
            else:
                starts = np.cumsum([0, *values["split_size_or_sections"]])
                parts = [(int(a), int(b - a)) for a, b in itertools.pairwise(starts)]
            self.pieces[node] = (src, dim, parts)
            return "pending"
        if method == "narrow":
            values = {
                **dict(zip(("dim", "start", "length"), self.resolve(args[1:]))),
                **self.resolve(dict(node.kwargs)),
            }
            dim, start = values["dim"] % rank, values["start"] % shape[values["dim"] % rank]
            if dim == 0:
                raise UnsupportedLayerError(f"from_torch: {where}: a narrow along the batch axis")
            return src, Narrow(dim, start, values["length"])
        if method == "getitem":
            return self._slice(src, shape, self.resolve(args[1]), where)
        return None

    def _map_as_tokens(self, node: Any, src: Any, shape: Any, method: str, args: list[Any]) -> Any:
        """An NCHW map viewed as (N, C, H*W) (pending: a transpose makes it tokens), or a channels-last one viewed
        as (N, H*W, C) (its tokens); None for other calls."""
        if shape is None or len(shape) != 4 or method not in ("view", "reshape", "flatten"):
            return None
        if method == "flatten":
            values = {**dict(zip(("start_dim", "end_dim"), self.resolve(args[1:]))), **self.resolve(dict(node.kwargs))}
            start, end = values.get("start_dim", 0), values.get("end_dim", -1)
            if src in self.nhwc and (start, end % 4 if isinstance(end, int) else end) == (1, 2):
                return src, ToTokens()
            if src not in self.nhwc and start == 2 and end in (-1, 3):
                self.ncl[node] = src
                return "pending"
            return None
        dims = self._dims(args)
        if src in self.nhwc:
            _, h, w, c = shape
            if len(dims) == 3 and dims[0] is BATCH and dims[1] in (h * w, -1) and dims[2] == c:
                return src, ToTokens()
            return None
        _, c, h, w = shape
        if len(dims) == 3 and dims[0] is BATCH and dims[1] == c and dims[2] in (h * w, -1):
            self.ncl[node] = src
            return "pending"
        return None

    def _ncl_step(self, node: Any, src: Any, method: str, args: list[Any], where: str) -> Any:
        """A call on a map viewed as (N, C, H*W): the transpose that makes it tokens, or a refusal."""
        if method == "contiguous":
            self.ncl[node] = self.ncl[src]
            return "pending"
        swap = method == "transpose" and sorted(self.resolve(args[1:3])) in ([1, 2], [-2, -1], [-1, 1], [1, -1])
        if swap or method == "permute" and tuple(self._dims(args)) == (0, 2, 1):
            return self.ncl[src], ToTokens()
        raise UnsupportedLayerError(
            f"from_torch: {where}: a map viewed as (N, C, H*W) is supported only as tokens, transposed to (N, H*W, C)"
        )

    def _swaps_last_two(self, method: str, args: list[Any]) -> bool:
        """``x.transpose(1, 2)`` (or -1, -2) and ``x.permute(0, 2, 1)`` of a rank-3 tensor."""
        if method == "transpose":
            return sorted(d % 3 for d in self.resolve(args[1:3]) if isinstance(d, int)) == [1, 2]
        return method == "permute" and tuple(self._dims(args)) == (0, 2, 1)

    def token_pool(self, gm: Any, node: Any, args: list[Any]) -> Any:
        """For ``nn.AdaptiveAvgPool1d(1)`` / ``F.adaptive_avg_pool1d(x, 1)`` of tokens transposed to (N, C, L)
        (Hugging Face's Swin pooler): the tokens, whose mean it is, as (N, C, 1); None for other calls. A
        flatten of the (N, C, 1) result then reads as the identity."""
        if not args or args[0] not in self.transposed:
            return None
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            size = m.output_size if type(m) is torch.nn.AdaptiveAvgPool1d else None
        elif node.op == "call_function" and node.target is torch.nn.functional.adaptive_avg_pool1d:
            size = args[1] if len(args) > 1 else node.kwargs.get("output_size")
        else:
            return None
        if size not in (1, (1,), [1]):
            return None
        self.pooled.add(node)
        return self.transposed[args[0]]

    def _transposed_step(self, node: Any, src: Any, method: str, args: list[Any], where: str) -> Any:
        """A call on tokens transposed to (N, C, L): the view as an (N, C, H, W) map that reads them back as a
        map (ToMap), or a refusal."""
        tokens = self.transposed[src]
        if method == "contiguous":
            self.transposed[node] = tokens
            return "pending"
        length, c = self.shape(tokens)[1:]  # type: ignore[index]
        dims = self._dims(args) if method in ("view", "reshape") else ()
        if len(dims) == 4 and dims[0] is BATCH and dims[1] in (c, -1) and all(isinstance(d, int) for d in dims[2:]):
            h, w = dims[2], dims[3]
            h = length // w if h == -1 and w > 0 else h
            w = length // h if w == -1 and h > 0 else w
            if h > 0 and w > 0 and h * w == length:
                return tokens, ToMap(h, w)
        raise UnsupportedLayerError(
            f"from_torch: {where}: tokens transposed to (N, C, L) are supported only read back as a map, "
            "x.transpose(1, 2).reshape(N, C, H, W)"
        )

    def _dims(self, args: list[Any]) -> tuple[Any, ...]:
        rest = list(args[1:])
        if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
            rest = list(rest[0])
        return tuple(self.resolve(rest))

    def _subsample(self, node: Any, src: Any, shape: tuple[int, ...], key: Any) -> Any:
        """``x[:, :, ::sh, ::sw]`` of a map (``x[:, ::sh, ::sw]`` channels-last: timm's LeViT), every sh-th row
        and sw-th column from the first: a MaxPool2d of kernel 1 and that stride; None for other indexing."""
        key = key if isinstance(key, tuple) else (key,)
        axes = (1, 2) if src in self.nhwc else (2, 3)
        if not all(isinstance(k, slice) for k in key) or len(key) > 4 or any(k != slice(None) for k in key[: axes[0]]):
            return None
        key = key + (slice(None),) * (4 - len(key))
        if any(k != slice(None) for k in key[axes[1] + 1 :]):
            return None
        strides = []
        for axis in axes:
            k = key[axis]
            whole = k.start in (None, 0) and (k.stop is None or isinstance(k.stop, int) and k.stop >= shape[axis])
            if not whole or not (k.step is None or isinstance(k.step, int) and k.step >= 1):
                return None
            strides.append(1 if k.step is None else k.step)
        if strides == [1, 1]:
            return None
        if src in self.nhwc:
            self.nhwc.add(node)
        return src, MaxPool2d(1, stride=tuple(strides))

    def _slice(self, src: Any, shape: tuple[int, ...], key: Any, where: str) -> Any:
        """x[:, a:b] (one sliced axis, step 1) as a Narrow; x[:] an alias."""
        key = key if isinstance(key, tuple) else (key,)
        if len(shape) == 3 and len(key) == 2 and key[0] == slice(None) and isinstance(key[1], int):
            return src, SelectToken(key[1] % shape[1])  # x[:, i] of tokens: token i's features
        if not all(isinstance(k, slice) for k in key) or len(key) > len(shape):
            raise UnsupportedLayerError(f"from_torch: {where}: only slices (x[:, a:b]) are supported as indexing")
        cut = [(d, k) for d, k in enumerate(key) if k != slice(None)]
        if not cut:
            return src, None
        if len(cut) > 1 or cut[0][0] == 0 or cut[0][1].step not in (None, 1):
            raise UnsupportedLayerError(f"from_torch: {where}: only one sliced non-batch axis with step 1 is supported")
        dim, k = cut[0]
        start, stop, _ = k.indices(shape[dim])
        if stop <= start:
            raise UnsupportedLayerError(f"from_torch: {where}: an empty slice")
        return src, Narrow(dim, start, stop - start)


def call_arguments(leaf: Any, members: list[Any]) -> tuple[Any, ...]:
    """The constant arguments a leaf module was called with besides its tensor, where its class takes some
    (Hugging Face's Swin layers: the size of the map their tokens are read as)."""
    from ..kinds.window._torch_sources import call_arguments as window_arguments

    return window_arguments(leaf, inner_shapes(members))


def inner_shapes(members: list[Any]) -> list[tuple[int, ...]]:
    """The shapes of the tensors a leaf module's call computed, in order (a module that reads its map's size
    from its arguments shows it here)."""
    vals = [m.meta.get("val") for m in members]
    return [tuple(int(d) for d in v.shape) for v in vals if isinstance(v, torch.Tensor)]


def _on_tokens(m: Any) -> bool:
    """Whether ``m`` is xconv's BatchNorm1d over each feature of (N, L, E) tokens."""
    from ..kinds.norm._torch import TokenBatchNorm1d

    return type(m) is TokenBatchNorm1d
