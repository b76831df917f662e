"""The ATen calls of an exported program as the torch-level calls the importer maps: each overload's bound
arguments, and the function or method (with its arguments) that computes exactly what the call computes."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from ..backends._torch_env import torch

F = torch.nn.functional

__all__ = ["WITH_INDICES", "bind", "overload", "torch_call"]


def bind(n: Any) -> dict[str, Any]:
    """An ATen call's arguments by name, defaults filled in."""
    schema = n.target._schema
    values: dict[str, Any] = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(n.args):
            values[arg.name] = n.args[i]
        elif arg.name in n.kwargs:
            values[arg.name] = n.kwargs[arg.name]
        elif arg.has_default_value():
            values[arg.name] = arg.default_value
    return values


def _slices(dim: int, start: Any, end: Any, step: Any) -> tuple[slice, ...]:
    """``x[:, ..., start:end:step]`` at ``dim``; the whole axis (``0:2**63 - 1``, as export writes ``x[:]``) as
    ``slice(None)``."""
    if start in (None, 0) and (end is None or isinstance(end, int) and end >= 2**62) and step in (None, 1):
        return (slice(None),) * (dim + 1)
    return (*(slice(None),) * dim, slice(start, end, step))


#: ATen overload -> how the importer's torch-level form computes it: (function or method name, arguments from
#: the bound ATen arguments ``a``); None where the call has no exact counterpart (it stays the ATen call).
_CALLS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "conv2d.default": lambda a: (
        F.conv2d,
        [a["input"], a["weight"], a["bias"], a["stride"], a["padding"], a["dilation"], a["groups"]],
    ),
    "conv2d.padding": lambda a: (
        F.conv2d,
        [a["input"], a["weight"], a["bias"], a["stride"], a["padding"], a["dilation"], a["groups"]],
    ),
    "linear.default": lambda a: (F.linear, [a["input"], a["weight"], a["bias"]]),
    "batch_norm.default": lambda a: (
        F.batch_norm,
        [a["input"], a["running_mean"], a["running_var"], a["weight"], a["bias"], a["training"], a["momentum"]]
        + [a["eps"]],
    ),
    "layer_norm.default": lambda a: (
        F.layer_norm,
        [a["input"], a["normalized_shape"], a["weight"], a["bias"], a["eps"]],
    ),
    "group_norm.default": lambda a: (F.group_norm, [a["input"], a["num_groups"], a["weight"], a["bias"], a["eps"]]),
    "relu.default": lambda a: (torch.relu, [a["self"]]),
    "relu_.default": lambda a: (torch.relu_, [a["self"]]),
    "sigmoid.default": lambda a: (torch.sigmoid, [a["self"]]),
    "square.default": lambda a: (torch.square, [a["self"]]),
    "pow.Tensor_Scalar": lambda a: (torch.square, [a["self"]]) if a["exponent"] == 2 else None,
    "sigmoid_.default": lambda a: ("sigmoid_", [a["self"]]),
    "tanh.default": lambda a: (torch.tanh, [a["self"]]),
    "tanh_.default": lambda a: ("tanh_", [a["self"]]),
    "gelu.default": lambda a: (F.gelu, [a["self"]], {"approximate": a["approximate"]}),
    "silu.default": lambda a: (F.silu, [a["self"]]),
    "silu_.default": lambda a: (F.silu, [a["self"]], {"inplace": True}),
    "hardswish.default": lambda a: (F.hardswish, [a["self"]]),
    "hardswish_.default": lambda a: (F.hardswish, [a["self"]], {"inplace": True}),
    "hardsigmoid.default": lambda a: (F.hardsigmoid, [a["self"]]),
    "hardsigmoid_.default": lambda a: (F.hardsigmoid, [a["self"]], {"inplace": True}),
    "hardtanh.default": lambda a: (F.hardtanh, [a["self"], a["min_val"], a["max_val"]]),
    "hardtanh_.default": lambda a: (F.hardtanh, [a["self"], a["min_val"], a["max_val"]], {"inplace": True}),
    "leaky_relu.default": lambda a: (F.leaky_relu, [a["self"], a["negative_slope"]]),
    "leaky_relu_.default": lambda a: (F.leaky_relu, [a["self"], a["negative_slope"]], {"inplace": True}),
    "elu.default": lambda a: (F.elu, [a["self"], a["alpha"]]) if a["scale"] == 1 and a["input_scale"] == 1 else None,
    "softmax.int": lambda a: (F.softmax, [a["self"], a["dim"]]) if a.get("dtype") is None else None,
    "clamp.default": lambda a: (torch.clamp, [a["self"], a["min"], a["max"]]),
    "clamp_.default": lambda a: (torch.clamp_, [a["self"], a["min"], a["max"]]),
    "add.Tensor": lambda a: _arith(operator.add, a),
    "add.Scalar": lambda a: _arith(operator.add, a),
    "add_.Tensor": lambda a: _arith(operator.iadd, a),
    "sub.Tensor": lambda a: _arith(operator.sub, a),
    "sub_.Tensor": lambda a: _arith(operator.isub, a),
    "rsub.Scalar": lambda a: (operator.sub, [a["other"], a["self"]]) if a["alpha"] == 1 else None,
    "mul.Tensor": lambda a: (operator.mul, [a["self"], a["other"]]),
    "matmul.default": lambda a: (operator.matmul, [a["self"], a["other"]]),
    "mul.Scalar": lambda a: (operator.mul, [a["self"], a["other"]]),
    "mul_.Tensor": lambda a: (operator.imul, [a["self"], a["other"]]),
    "div.Tensor": lambda a: (operator.truediv, [a["self"], a["other"]]),
    "div.Scalar": lambda a: (operator.truediv, [a["self"], a["other"]]),
    "cat.default": lambda a: (torch.cat, [list(a["tensors"]), a["dim"]]),
    "flatten.using_ints": lambda a: (torch.flatten, [a["self"], a["start_dim"], a["end_dim"]]),
    "view.default": lambda a: ("view", [a["self"], list(a["size"])]),
    "reshape.default": lambda a: ("reshape", [a["self"], list(a["shape"])]),
    "reshape_as.default": lambda a: ("reshape_as", [a["self"], a["other"]]),
    "view_as.default": lambda a: ("view_as", [a["self"], a["other"]]),
    "unsqueeze.default": lambda a: ("unsqueeze", [a["self"], a["dim"]]),
    "_unsafe_view.default": lambda a: ("reshape", [a["self"], list(a["size"])]),
    "permute.default": lambda a: ("permute", [a["self"], list(a["dims"])]),
    "expand.default": lambda a: ("expand", [a["self"], list(a["size"])]) if not a.get("implicit") else None,
    "transpose.int": lambda a: ("transpose", [a["self"], a["dim0"], a["dim1"]]),
    "contiguous.default": lambda a: ("contiguous", [a["self"]]),
    # a copy is treated as a view: in-place writes after it are refused rather than assumed not to alias
    "clone.default": lambda a: ("contiguous", [a["self"]]) if a.get("memory_format") is None else None,
    "alias.default": lambda a: ("contiguous", [a["self"]]),
    "detach.default": lambda a: ("contiguous", [a["self"]]),
    "select.int": lambda a: (operator.getitem, [a["self"], (*(slice(None),) * a["dim"], a["index"])]),
    "slice.Tensor": lambda a: (operator.getitem, [a["self"], _slices(a["dim"], a["start"], a["end"], a["step"])]),
    "narrow.default": lambda a: ("narrow", [a["self"], a["dim"], a["start"], a["length"]]),
    "split.Tensor": lambda a: ("split", [a["self"], a["split_size"], a["dim"]]),
    "split_with_sizes.default": lambda a: ("split", [a["self"], list(a["split_sizes"]), a["dim"]]),
    "chunk.default": lambda a: ("chunk", [a["self"], a["chunks"], a["dim"]]),
    "mean.dim": lambda a: (torch.mean, [a["self"], list(a["dim"]), a["keepdim"]]) if a.get("dtype") is None else None,
    "adaptive_avg_pool2d.default": lambda a: (F.adaptive_avg_pool2d, [a["self"], list(a["output_size"])]),
    "max_pool2d.default": lambda a: (
        F.max_pool2d,
        [a["self"], list(a["kernel_size"]), list(a["stride"]) or None, list(a["padding"]), list(a["dilation"])]
        + [a["ceil_mode"]],
    ),
    "avg_pool2d.default": lambda a: (
        F.avg_pool2d,
        [a["self"], list(a["kernel_size"]), list(a["stride"]) or None, list(a["padding"]), a["ceil_mode"]]
        + [a["count_include_pad"], a["divisor_override"]],
    ),
    "dropout.default": lambda a: (F.dropout, [a["input"], a["p"], a["train"]]),
    "dropout_.default": lambda a: (F.dropout, [a["self"], a["p"], a["train"]]),
    "pad.default": lambda a: (F.pad, [a["self"], list(a["pad"]), a["mode"], a["value"]]),
    "constant_pad_nd.default": lambda a: (F.pad, [a["self"], list(a["pad"]), "constant", a["value"]]),
    "upsample_nearest2d.vec": lambda a: (
        F.interpolate,
        [a["input"]],
        {"size": _opt_list(a["output_size"]), "scale_factor": _opt_list(a["scale_factors"]), "mode": "nearest"},
    ),
    "upsample_bilinear2d.vec": lambda a: (
        F.interpolate,
        [a["input"]],
        {
            "size": _opt_list(a["output_size"]),
            "scale_factor": _opt_list(a["scale_factors"]),
            "mode": "bilinear",
            "align_corners": a["align_corners"],
        },
    ),
    "sym_size.int": lambda a: ("size", [a["self"], a["dim"]]),
    "unbind.int": lambda a: ("unbind", [a["self"], a["dim"]]),
    "scaled_dot_product_attention.default": lambda a: _sdpa(a),
    # (a table's entries at an index tensor; the importer maps only an attention's bias table[:, index])
    "index.Tensor": lambda a: (
        operator.getitem,
        [a["self"], tuple(slice(None) if i is None else i for i in a["indices"])],
    ),
}


def _sdpa(a: dict[str, Any]) -> Any:
    keys = ("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")  # (checked by the importer)
    return F.scaled_dot_product_attention, [a["query"], a["key"], a["value"]], {k: a.get(k) for k in keys}


#: ATen calls that return (values, indices); read as F.adaptive_max_pool2d, which returns the values alone
WITH_INDICES = {"adaptive_max_pool2d.default"}


def overload(target: Any) -> str | None:
    """ "conv2d.default" for ``aten.conv2d.default``; None for anything but an ATen call."""
    if isinstance(target, torch._ops.OpOverload) and target.namespace == "aten":
        return f"{target.overloadpacket.__name__}.{target._overloadname}"
    return None


def _opt_list(v: Any) -> Any:
    return None if v is None else list(v)


def _arith(op: Any, a: dict[str, Any]) -> Any:
    return (op, [a["self"], a["other"]]) if a.get("alpha", 1) == 1 else None


def torch_call(n: Any, env: dict[Any, Any]) -> tuple[Any, list[Any], dict[str, Any]]:
    """The torch-level call computing the exported call ``n``, its arguments read through ``env``."""

    def mapped(v: Any) -> Any:
        return torch.fx.node.map_arg(v, lambda x: env[x])

    target = n.target
    key = overload(target)
    if key in _CALLS:
        form = _CALLS[key](bind(n))
        if form is not None:
            fn, args = form[0], form[1]
            kwargs = form[2] if len(form) > 2 else {}
            return fn, [mapped(x) for x in args], {k: mapped(v) for k, v in kwargs.items()}
    return target, list(mapped(tuple(n.args))), dict(mapped(dict(n.kwargs)))
