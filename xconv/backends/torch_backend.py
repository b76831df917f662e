"""PyTorch backend: native ``torch.nn`` modules, NCHW. The only file that imports torch."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..shapes import LayerInfo
from ..spec import (
    ELU, GELU, AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Identity, LeakyReLU,
    Linear, MaxPool2d, ReLU, Sequential, Sigmoid, SiLU, Softmax, Tanh,
)

NAME = "torch"

_TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


class PaddedConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` whose padding ``nn.Conv2d`` cannot express (4-sided, e.g. TensorFlow 'same' at
    stride 2) is applied by ``F.pad`` inside the same module, so its ``state_dict`` keys stay
    ``weight`` / ``bias``."""

    def __init__(self, *args: Any, pad: tuple[int, int, int, int], pad_mode: str, **kwargs: Any) -> None:
        super().__init__(*args, padding=0, **kwargs)
        self.pad = pad  # F.pad order: (left, right, top, bottom)
        self.pad_mode = pad_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad, mode=self.pad_mode))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pad={self.pad}, pad_mode={self.pad_mode!r}"


def _conv2d(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer: Conv2d = info.layer  # type: ignore[assignment]
    (top, bottom), (left, right) = info.padding  # type: ignore[misc]
    common = dict(
        stride=layer.stride, dilation=layer.dilation, groups=layer.groups, bias=layer.bias, **factory
    )
    args = (layer.in_channels, layer.out_channels, layer.kernel_size)
    if top == bottom and left == right:
        return nn.Conv2d(*args, padding=(top, left), padding_mode=layer.padding_mode, **common)
    return PaddedConv2d(*args, pad=(left, right, top, bottom), pad_mode=_PAD_MODES[layer.padding_mode], **common)


def _linear(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer: Linear = info.layer  # type: ignore[assignment]
    return nn.Linear(layer.in_features, layer.out_features, bias=layer.bias, **factory)  # type: ignore[arg-type]


def _batchnorm(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer = info.layer
    cls = nn.BatchNorm2d if isinstance(layer, BatchNorm2d) else nn.BatchNorm1d
    return cls(layer.num_features, eps=layer.eps, momentum=layer.momentum, affine=layer.affine,  # type: ignore[attr-defined]
               track_running_stats=layer.track_running_stats, **factory)  # type: ignore[attr-defined]


def _maxpool(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer: MaxPool2d = info.layer  # type: ignore[assignment]
    return nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, layer.dilation, ceil_mode=layer.ceil_mode)


def _avgpool(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer: AvgPool2d = info.layer  # type: ignore[assignment]
    return nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, ceil_mode=layer.ceil_mode,
                        count_include_pad=layer.count_include_pad)


_BUILDERS: dict[type, Callable[[LayerInfo, dict[str, Any]], nn.Module]] = {
    Conv2d: _conv2d,
    ReLU: lambda info, factory: nn.ReLU(),
    Flatten: lambda info, factory: nn.Flatten(),
    Linear: _linear,
    MaxPool2d: _maxpool,
    AvgPool2d: _avgpool,
    AdaptiveAvgPool2d: lambda info, factory: nn.AdaptiveAvgPool2d(info.layer.output_size),  # type: ignore[attr-defined]
    BatchNorm2d: _batchnorm,
    BatchNorm1d: _batchnorm,
    Dropout: lambda info, factory: nn.Dropout(info.layer.p),  # type: ignore[attr-defined]
    LeakyReLU: lambda info, factory: nn.LeakyReLU(info.layer.negative_slope),  # type: ignore[attr-defined]
    Sigmoid: lambda info, factory: nn.Sigmoid(),
    Tanh: lambda info, factory: nn.Tanh(),
    GELU: lambda info, factory: nn.GELU(approximate=info.layer.approximate),  # type: ignore[attr-defined]
    ELU: lambda info, factory: nn.ELU(info.layer.alpha),  # type: ignore[attr-defined]
    SiLU: lambda info, factory: nn.SiLU(),
    Softmax: lambda info, factory: nn.Softmax(dim=info.layer.dim),  # type: ignore[attr-defined]
    Identity: lambda info, factory: nn.Identity(),
}


def build(spec: Sequential, infos: list[LayerInfo], weights: dict[str, np.ndarray], dtype: str) -> nn.Module:
    # Modules are made on the meta device so that building neither spends time on torch's own init nor
    # consumes the user's global torch RNG; the weights are then copied in.
    factory = {"device": "meta", "dtype": _TORCH_DTYPES[dtype]}
    model = nn.Sequential(*(_BUILDERS[type(info.layer)](info, factory) for info in infos))
    model = model.to_empty(device="cpu")
    model.xconv_spec = spec
    model.xconv_dtype = dtype
    set_weights(model, infos, weights)
    # Inference mode, like a Keras call without ``training``: tm(x) and km(x) agree out of the box. Training
    # loops call model.train(), as torch's own do.
    return model.eval()


def owns_model(obj: Any) -> bool:
    return isinstance(obj, nn.Module)


def owns_tensor(obj: Any) -> bool:
    return isinstance(obj, torch.Tensor)


def spec_of(model: nn.Module) -> Sequential | None:
    spec = getattr(model, "xconv_spec", None)
    return spec if isinstance(spec, Sequential) else None


def dtype_of(model: nn.Module) -> str:
    for p in model.parameters():
        return str(p.dtype).replace("torch.", "")
    return str(getattr(model, "xconv_dtype", "float32"))


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.state_dict(keep_vars=True))


def get_weights(model: nn.Module, infos: list[LayerInfo]) -> dict[str, np.ndarray]:
    tensors = _tensors(model)
    out = {}
    for info in infos:
        for name in info.params:
            key = f"{info.index}.{name}"
            out[key] = tensors[key].detach().cpu().numpy().copy()
    return out


def set_weights(model: nn.Module, infos: list[LayerInfo], weights: dict[str, np.ndarray]) -> None:
    tensors = _tensors(model)
    with torch.no_grad():
        for key, array in weights.items():
            tensors[key].copy_(torch.from_numpy(np.require(array, requirements="C")))  # keeps 0-d arrays 0-d


def float_bytes(model: nn.Module, infos: list[LayerInfo]) -> int:
    import itertools

    tensors = itertools.chain(model.parameters(), model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors if t.is_floating_point())


def export_tensors(model: nn.Module, infos: list[LayerInfo]) -> dict[str, Any]:
    """Canonical weights as the model's own tensors (no copy; DLPack producers), for transfer_weights."""
    tensors = _tensors(model)
    return {f"{i.index}.{n}": tensors[f"{i.index}.{n}"].detach() for i in infos for n in i.params}


def import_tensors(model: nn.Module, infos: list[LayerInfo], arrays: dict[str, Any]) -> None:
    """Copy canonical DLPack tensors (same dtype, shapes checked by the spec) into the model, one pass each."""
    tensors = _tensors(model)
    with torch.no_grad():
        for key, array in arrays.items():
            if isinstance(array, np.ndarray):
                source = torch.from_numpy(np.array(array, order="C"))
            else:
                source = array if isinstance(array, torch.Tensor) else torch.from_dlpack(array)
            tensors[key].copy_(source)


def permute(x: torch.Tensor, perm: tuple[int, ...]) -> torch.Tensor:
    return x.permute(*perm).contiguous()


class _Mode:
    """``with _Mode(model, training):`` runs in that mode and restores the model's own afterwards."""

    def __init__(self, model: nn.Module, training: bool) -> None:
        self.model, self.training, self.was = model, training, model.training

    def __enter__(self) -> None:
        self.model.train(self.training)

    def __exit__(self, *exc: Any) -> None:
        self.model.train(self.was)


def forward(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Run ``model`` in inference mode (eval) on an NCHW (or (N, F)) numpy batch; returns numpy in the same
    logical layout. The model's own mode is restored afterwards."""
    with torch.no_grad(), _Mode(model, False):
        return model(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def trace(model: nn.Module, x: np.ndarray, upstream: np.ndarray, training: bool = False) -> tuple[list[np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """Every layer's output, and the gradients of sum(output * upstream) with respect to the input and every
    trainable weight (canonical keys), all as numpy in canonical layout; in eval mode, or in train mode with
    ``training`` (BatchNorm running statistics are then updated once)."""
    model.zero_grad(set_to_none=True)
    xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(True)
    outs, h = [], xt
    with _Mode(model, training):
        for module in model:
            h = module(h)
            outs.append(h.detach().numpy().copy())
    (h * torch.from_numpy(np.ascontiguousarray(upstream))).sum().backward()
    grads = {
        k: (np.zeros(tuple(p.shape), dtype=x.dtype) if p.grad is None else p.grad.numpy().copy())
        for k, p in model.named_parameters()
    }
    return outs, xt.grad.numpy().copy(), grads  # type: ignore[union-attr]


def train(
    model: nn.Module,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    optimizer: dict[str, Any],
    on_step: Callable[[int, float], None] | None = None,
) -> np.ndarray:
    """Train in place with the native optimizer and mean cross-entropy, one step per batch ``(x, y)`` (x NCHW
    or (N, F), y integer labels), the seed notebook's loop; ``on_step(t, loss)`` is called after step ``t``
    (counted from 0), with the model back in train mode for the next step. Returns the per-step losses."""
    params = list(model.parameters())
    if optimizer["name"] == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=optimizer["lr"], momentum=optimizer["momentum"], nesterov=optimizer["nesterov"]
        )
    else:
        opt = torch.optim.Adam(params, lr=optimizer["lr"], betas=optimizer["betas"], eps=optimizer["eps"])
    losses = []
    for t, (x, y) in enumerate(batches):
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(torch.from_numpy(np.ascontiguousarray(x))), torch.from_numpy(y))
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(t, losses[-1])
    return np.asarray(losses)


# ---- importing hand-written models ----

_SUPPORTED = (
    "nn.Conv2d / F.conv2d, nn.ReLU / F.relu / torch.relu / .relu(), nn.Flatten / torch.flatten(x, 1) / "
    "x.view(N, -1) / x.reshape(N, -1), nn.Linear / F.linear, nn.ZeroPad2d (folded into the next conv), "
    "nn.MaxPool2d / F.max_pool2d, nn.AvgPool2d / F.avg_pool2d, nn.AdaptiveAvgPool2d / F.adaptive_avg_pool2d, "
    "nn.BatchNorm1d / nn.BatchNorm2d, nn.Dropout, nn.LeakyReLU / F.leaky_relu, nn.Sigmoid / torch.sigmoid, "
    "nn.Tanh / torch.tanh, nn.GELU / F.gelu, nn.ELU / F.elu, nn.SiLU / F.silu, nn.Softmax / F.softmax (with dim), "
    "nn.Identity, nested nn.Sequential; any nn.Module whose forward is a straight chain of these"
)


def _traced_chain(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Trace ``module.forward`` with torch.fx and return its operations as (name, equivalent nn module) in
    order, refusing anything that is not one straight chain of supported operations."""
    import operator

    import torch.fx

    from ..errors import UnsupportedLayerError

    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception as e:  # noqa: BLE001 - tracing failures are reported as unsupported
        raise UnsupportedLayerError(
            f"from_torch: {type(module).__name__}.forward cannot be traced by torch.fx ({type(e).__name__}: {e}); "
            f"supported: {_SUPPORTED}"
        ) from None
    nodes = list(graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedLayerError(f"from_torch: forward must take one input. Received: {len(placeholders)}")
    current = placeholders[0]
    params: dict[Any, Any] = {}  # get_attr node -> tensor
    batch: set[Any] = set()  # nodes that hold the batch size of the current tensor
    out: list[tuple[str, nn.Module]] = []

    def tensor_args(node: Any) -> list[Any]:
        return [a for a in _flat_args(node) if a not in params and a not in batch and a is not current]

    for node in nodes:
        where = f"operation {node.name!r} ({node.op} {getattr(node.target, '__name__', node.target)})"
        if node.op == "placeholder":
            continue
        if node.op == "get_attr":
            params[node] = _get_attr(module, node.target)
            continue
        if node.op == "output":
            if node.args[0] is not current:
                raise UnsupportedLayerError("from_torch: forward does not return the end of its chain")
            continue
        args = list(node.args)
        # batch-size helpers: x.shape[0], x.size(0)
        if node.op == "call_function" and node.target is getattr and args == [current, "shape"]:
            batch.add(node)
            continue
        if node.op == "call_function" and node.target is operator.getitem and args[0] in batch and args[1] == 0:
            batch.add(node)
            continue
        if node.op == "call_method" and node.target == "size" and args[:1] == [current] and args[1:] == [0]:
            batch.add(node)
            continue
        if not args or args[0] is not current or tensor_args(node):
            raise UnsupportedLayerError(
                f"from_torch: {where} does not take exactly the previous operation's output: residual "
                f"connections and other non-chain graphs are not supported"
            )
        out.append((node.name, _as_module(module, node, args, params, batch, where)))
        current = node
    return out


def _flat_args(node: Any) -> list[Any]:
    import torch.fx

    found: list[Any] = []
    torch.fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
    return found


def _param(t: Any) -> Any:
    return t if t is None or isinstance(t, nn.Parameter) else nn.Parameter(t, requires_grad=False)


def _get_attr(module: nn.Module, target: str) -> Any:
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _as_module(root: nn.Module, node: Any, args: list[Any], params: dict[Any, Any], batch: set[Any], where: str) -> nn.Module:
    """The nn module equivalent to one traced operation (sharing its parameters), or UnsupportedLayerError."""
    from ..errors import UnsupportedLayerError

    kwargs = dict(node.kwargs)
    if node.op == "call_module":
        return root.get_submodule(node.target)
    if node.op == "call_function" and node.target in (F.relu, torch.relu) or (
        node.op == "call_method" and node.target == "relu"
    ):
        return nn.ReLU()
    if node.op == "call_function" and node.target is torch.flatten or (node.op == "call_method" and node.target == "flatten"):
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        if start == 1 and end == -1:
            return nn.Flatten()
    if node.op == "call_method" and node.target in ("view", "reshape"):
        rest = args[1:]
        if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
            rest = list(rest[0])
        if len(rest) == 2 and rest[0] in batch and rest[1] == -1:
            return nn.Flatten()
    if node.op == "call_function" and node.target is F.conv2d:
        names = ["weight", "bias", "stride", "padding", "dilation", "groups"]
        values = {**dict(zip(names, args[1:])), **kwargs}
        weight, bias = params.get(values.get("weight")), params.get(values.get("bias"))
        if weight is None or ("bias" in values and values["bias"] is not None and bias is None):
            raise UnsupportedLayerError(f"from_torch: {where}: conv weights must be module parameters")
        groups = int(values.get("groups", 1))
        conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]),
                         stride=values.get("stride", 1), padding=values.get("padding", 0),
                         dilation=values.get("dilation", 1), groups=groups, bias=bias is not None, device="meta")
        conv.weight, conv.bias = _param(weight), _param(bias)  # share, do not copy
        return conv
    functional = _functional_module(node, args, kwargs)
    if functional is not None:
        return functional
    if node.op == "call_function" and node.target is F.linear:
        values = {**dict(zip(["weight", "bias"], args[1:])), **kwargs}
        weight, bias = params.get(values.get("weight")), params.get(values.get("bias"))
        if weight is None:
            raise UnsupportedLayerError(f"from_torch: {where}: linear weights must be module parameters")
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
        linear.weight, linear.bias = _param(weight), _param(bias)
        return linear
    raise UnsupportedLayerError(f"from_torch: {where} is not supported; supported: {_SUPPORTED}")


def _functional_module(node: Any, args: list[Any], kwargs: dict[str, Any]) -> nn.Module | None:
    """The module form of a parameter-free functional call (F.max_pool2d, torch.sigmoid, x.softmax(1), ...)."""

    def values(*names: str) -> dict[str, Any]:
        return {**dict(zip(names, args[1:])), **kwargs}

    target = node.target
    if node.op == "call_method":
        methods = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
        if target in methods and len(args) == 1 and not kwargs:
            return methods[target]()
        if target == "softmax":
            dim = values("dim").get("dim")
            return None if dim is None else nn.Softmax(dim=dim)
        return None
    if node.op != "call_function":
        return None
    if target is F.max_pool2d:
        v = values("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
        if v.get("return_indices"):
            return None
        return nn.MaxPool2d(v["kernel_size"], v.get("stride"), v.get("padding", 0), v.get("dilation", 1),
                            ceil_mode=v.get("ceil_mode", False))
    if target is F.avg_pool2d:
        v = values("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
        return nn.AvgPool2d(v["kernel_size"], v.get("stride"), v.get("padding", 0), v.get("ceil_mode", False),
                            v.get("count_include_pad", True), v.get("divisor_override"))
    if target is F.adaptive_avg_pool2d:
        return nn.AdaptiveAvgPool2d(values("output_size")["output_size"])
    if target in (torch.sigmoid, F.sigmoid):
        return nn.Sigmoid()
    if target in (torch.tanh, F.tanh):
        return nn.Tanh()
    if target is F.leaky_relu:
        return nn.LeakyReLU(values("negative_slope").get("negative_slope", 0.01))
    if target is F.gelu:
        return nn.GELU(approximate=values().get("approximate", "none"))
    if target is F.elu:
        return nn.ELU(values("alpha").get("alpha", 1.0))
    if target is F.silu:
        return nn.SiLU()
    if target in (F.softmax, torch.softmax):
        dim = values("dim").get("dim")
        return None if dim is None else nn.Softmax(dim=dim)
    return None


def _flat_modules(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    out = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            out.extend(_flat_modules(child, f"{full}."))
        else:
            out.append((full, child))
    return out


def import_model(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[Sequential, dict[str, np.ndarray]]:
    """A hand-written ``nn.Sequential`` -> (spec, canonical weights). Pads that fold exactly into the next
    conv's zero padding are folded; anything else unsupported raises UnsupportedLayerError."""
    from ..errors import UnsupportedLayerError

    items = _flat_modules(module) if isinstance(module, nn.Sequential) else _traced_chain(module)
    layers: list[Any] = []
    tensors: dict[str, Any] = {}
    pending: tuple[int, int, int, int] | None = None  # (left, right, top, bottom) from ZeroPad2d
    pending_name = ""
    for name, m in items:
        where = f"module {name!r} ({type(m).__name__})"
        if isinstance(m, nn.ZeroPad2d):
            pad = tuple(int(v) for v in m.padding)
            if pending is not None or min(pad) < 0:
                raise UnsupportedLayerError(f"from_torch: {where}: only one non-negative ZeroPad2d before a conv folds")
            pending, pending_name = pad, name  # type: ignore[assignment]
            continue
        if pending is not None and not isinstance(m, nn.Conv2d):
            raise UnsupportedLayerError(
                f"from_torch: module {pending_name!r} (ZeroPad2d) is followed by {where}; a pad folds only into "
                "the conv right after it"
            )
        index = len(layers)
        if isinstance(m, nn.Conv2d):
            padding: Any = m.padding
            if isinstance(padding, str):
                if padding == "same" and pending is None:
                    padding = "same"  # torch allows it only at stride 1, where it equals TF's rule
                elif padding == "valid":
                    padding = (0, 0)
                else:
                    raise UnsupportedLayerError(f"from_torch: {where}: padding='same' after a ZeroPad2d does not fold")
            if pending is not None:
                if m.padding_mode != "zeros":
                    raise UnsupportedLayerError(
                        f"from_torch: module {pending_name!r} (ZeroPad2d) before {where} with "
                        f"padding_mode={m.padding_mode!r} does not fold: the conv pads after the zeros"
                    )
                left, right, top, bottom = pending
                padding = ((top + padding[0], bottom + padding[0]), (left + padding[1], right + padding[1]))
                pending = None
            layers.append(Conv2d(
                m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=padding,
                dilation=m.dilation, groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode,
            ))
            tensors[f"{index}.weight"] = m.weight
            if m.bias is not None:
                tensors[f"{index}.bias"] = m.bias
        elif isinstance(m, nn.ReLU):
            layers.append(ReLU())
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise UnsupportedLayerError(f"from_torch: {where}: only Flatten(start_dim=1, end_dim=-1) is supported")
            layers.append(Flatten())
        elif isinstance(m, nn.Linear):
            layers.append(Linear(m.in_features, m.out_features, bias=m.bias is not None))
            tensors[f"{index}.weight"] = m.weight
            if m.bias is not None:
                tensors[f"{index}.bias"] = m.bias
        elif isinstance(m, nn.Identity):
            layers.append(Identity())
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.BatchNorm2d, nn.BatchNorm1d,
                            nn.Dropout, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.ELU, nn.SiLU, nn.Softmax)):
            layer = _module_layer(m, where)
            layers.append(layer)
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                for key, t in m.state_dict(keep_vars=True).items():
                    tensors[f"{index}.{key}"] = t
        else:
            raise UnsupportedLayerError(f"from_torch: {where} is not supported; supported: {_SUPPORTED}")
    if pending is not None:
        raise UnsupportedLayerError(f"from_torch: module {pending_name!r} (ZeroPad2d) is not followed by a conv")
    spec = Sequential(*layers, input_shape=input_shape)
    return spec, {k: t.detach().cpu().numpy().copy() for k, t in tensors.items()}


def _module_layer(m: nn.Module, where: str) -> Any:
    """The spec layer of one parameter-free (or BatchNorm) torch module, or UnsupportedLayerError."""
    from ..errors import UnsupportedLayerError

    if isinstance(m, nn.MaxPool2d):
        if m.return_indices:
            raise UnsupportedLayerError(f"from_torch: {where}: return_indices=True is not supported")
        return MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
    if isinstance(m, nn.AvgPool2d):
        if m.divisor_override is not None:
            raise UnsupportedLayerError(f"from_torch: {where}: divisor_override is not supported")
        return AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad)
    if isinstance(m, nn.AdaptiveAvgPool2d):
        size = m.output_size
        if size is None or (isinstance(size, (tuple, list)) and None in size):
            raise UnsupportedLayerError(f"from_torch: {where}: output_size with None is not supported; give both sizes")
        return AdaptiveAvgPool2d(size)
    if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        cls = BatchNorm2d if isinstance(m, nn.BatchNorm2d) else BatchNorm1d
        return cls(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                   track_running_stats=m.track_running_stats)
    if isinstance(m, nn.Dropout):
        return Dropout(m.p)
    if isinstance(m, nn.LeakyReLU):
        return LeakyReLU(m.negative_slope)
    if isinstance(m, nn.GELU):
        return GELU(m.approximate)
    if isinstance(m, nn.ELU):
        return ELU(m.alpha)
    if isinstance(m, nn.Softmax):
        if m.dim is None:
            raise UnsupportedLayerError(f"from_torch: {where}: Softmax needs an explicit dim (torch's implicit choice is deprecated)")
        return Softmax(m.dim)
    return {nn.Sigmoid: Sigmoid, nn.Tanh: Tanh, nn.SiLU: SiLU}[type(m)]()


def read_state_dict(path: str) -> dict[str, Any]:
    """A torch state_dict file, read with ``weights_only=True``: tensors and containers only, never code."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"it holds a {type(state).__name__}, not a state_dict")
    return state


def write_state_dict(model: nn.Module, path: str) -> None:
    torch.save(model.state_dict(), path)
