"""PyTorch backend: native ``torch.nn`` modules, NCHW (each kind's modules are built by its family's torch part,
``xconv/kinds/<family>/_torch.py``; torch itself comes from ``xconv.backends._torch_env``)."""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable, Iterable
from typing import Any, cast

import numpy as np

from ..graph import (
    SIDE_INPUTS,
    concat_axis,
    is_chain,
    model_outputs,
    reads_side,
    returns_list,
    side_inputs,
    upstreams,
)
from ..kinds import framework_table
from ..kinds.token._dot import bias_index
from ..kinds.token._torch import dot_product_attention
from ..shapes import LayerInfo
from ..spec import Sequential
from ._torch_env import F, nn, torch

NAME = "torch"

_TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: layer class -> (info, {"device", "dtype"}) -> its torch module, from each kind family's torch part
_BUILDERS: dict[type, Callable[[LayerInfo, dict[str, Any]], nn.Module]] = framework_table("torch", "BUILDERS")


def _owner(root: nn.Module, path: str) -> tuple[nn.Module, str]:
    """(the module that holds dotted ``path`` under ``root``, the last part), making plain containers on the way."""
    *parents, leaf = path.split(".")
    owner = root
    for part in parents:
        child = owner._modules.get(part)
        if child is None:
            child = nn.Module()
            owner.add_module(part, child)
        owner = child
    return owner, leaf


def _install(root: nn.Module, path: str, module: nn.Module) -> None:
    owner, leaf = _owner(root, path)
    owner.add_module(leaf, module)


def _install_parameter(root: nn.Module, path: str, parameter: nn.Parameter) -> None:
    owner, leaf = _owner(root, path)
    owner.register_parameter(leaf, parameter)


def _attention_bias(root: nn.Module, graph: Any, info: LayerInfo, factory: dict[str, Any]) -> Any:
    """A DotProductAttention's bias: its table ``attention_biases`` (a parameter) and index
    ``attention_bias_idxs`` (a buffer, in the state_dict where ``state_index``) at its key, and the graph's
    ``table[:, index]``."""
    layer = cast(Any, info.layer)
    table, index = f"{info.key}.attention_biases", f"{info.key}.attention_bias_idxs"
    _install_parameter(root, table, nn.Parameter(torch.empty(info.params["attention_biases"], **factory)))
    owner, leaf = _owner(root, index)
    (h, w), stride = layer.bias_grid, layer.bias_stride
    shape = (-(-h // stride) * -(-w // stride), h * w)
    owner.register_buffer(leaf, torch.empty(shape, dtype=torch.int64, device="meta"), persistent=layer.state_index)
    return graph.call_function(operator.getitem, (graph.get_attr(table), (slice(None), graph.get_attr(index))))


def _join(info: LayerInfo, args: list[Any], training: bool = False, model: nn.Module | None = None) -> Any:
    """A join node on torch tensors (also fx proxies); a DotProductAttention's bias table is ``model``'s."""
    if info.kind == "DotProductAttention":
        layer = cast(Any, info.layer)
        q, k, v = args
        bias = None
        if layer.bias_grid is not None:
            assert model is not None
            table = model.get_parameter(f"{info.key}.attention_biases")
            bias = table[:, model.get_buffer(f"{info.key}.attention_bias_idxs")]
        return dot_product_attention(q, k, v, layer.num_heads, layer.scale, layer.dropout, training, bias)
    if info.kind == "Concat":
        return torch.cat(args, dim=concat_axis(info))
    if info.kind == "Subtract":
        return args[0] - args[1]
    out = args[0]
    for a in args[1:]:
        out = out + a if info.kind == "Add" else out * a
    return out


def build(spec: Sequential, infos: list[LayerInfo], weights: dict[str, np.ndarray], dtype: str) -> nn.Module:
    # Modules are made on the meta device so that building neither spends time on torch's own init nor
    # consumes the user's global torch RNG; the weights are then copied in.
    factory = {"device": "meta", "dtype": _TORCH_DTYPES[dtype]}
    modules = [None if info.is_join else _BUILDERS[type(info.layer)](info, factory) for info in infos]
    sides = side_inputs(infos)
    if is_chain(infos) and not sides and not returns_list(infos):
        model: nn.Module = nn.Sequential(*modules)  # type: ignore[arg-type]
    else:
        # A graph: a torch.fx.GraphModule whose submodules sit at the canonical keys (so its state_dict has
        # exactly the canonical keys) and whose generated forward adds, multiplies and concatenates.
        root = nn.Module()
        graph = torch.fx.Graph()
        values: dict[int, Any] = {-1: graph.placeholder("x")}
        # (a text encoder's padding mask, (N, L), 1 for a token, 0 for padding, None: every token; its token
        # types, (N, L), None: every token of type 0)
        side = {name: graph.placeholder(name, default_value=None) for name in sides}
        for info, module in zip(infos, modules):
            args = [values[i] for i in info.inputs]
            if module is None:
                if info.kind == "Concat":
                    values[info.index] = graph.call_function(torch.cat, (args, concat_axis(info)))
                elif info.kind == "DotProductAttention":  # (its dropout follows the model's mode)
                    layer = cast(Any, info.layer)
                    mode = (layer.dropout, graph.get_attr("training")) if layer.dropout else ()
                    bias = {} if layer.bias_grid is None else {"bias": _attention_bias(root, graph, info, factory)}
                    values[info.index] = graph.call_function(
                        dot_product_attention, (*args, layer.num_heads, layer.scale, *mode), bias
                    )
                else:
                    op = {"Add": operator.add, "Subtract": operator.sub}.get(info.kind, operator.mul)
                    node = args[0]
                    for a in args[1:]:
                        node = graph.call_function(op, (node, a))
                    values[info.index] = node
            elif info.kind == "LayerScale":  # a parameter of the module at the key, as torchvision's CNBlock
                _install_parameter(root, f"{info.key}.layer_scale", cast(nn.Parameter, module.layer_scale))
                scale = graph.get_attr(f"{info.key}.layer_scale")
                values[info.index] = graph.call_function(operator.mul, (scale, args[0]))
            else:
                clash = [part for part in info.key.split(".") if hasattr(nn.Module, part)]
                if clash:
                    from ..errors import SpecError

                    raise SpecError(
                        f"layer {info.label}: the name part {clash[0]!r} is an attribute of every "
                        "torch.nn.Module; torch cannot hold a submodule under that name"
                    )
                _install(root, info.key, module)
                read = reads_side(info)
                reads = (args[0],) if read is None else (args[0], side[read])
                values[info.index] = graph.call_module(info.key, reads)
        returned = [values[info.index] for info in model_outputs(infos)]
        graph.output(returned if returns_list(infos) else returned[0])
        model = torch.fx.GraphModule(root, graph, class_name="XconvGraph")
    model = model.to_empty(device="cpu")
    for info in infos:  # (an attention's bias index, fixed; GraphModule made every buffer persistent)
        if info.is_join and getattr(info.layer, "bias_grid", None) is not None:
            layer = cast(Any, info.layer)
            owner, leaf = _owner(model, f"{info.key}.attention_bias_idxs")
            index = torch.from_numpy(bias_index(layer.bias_grid, layer.bias_stride))
            owner.register_buffer(leaf, index, persistent=layer.state_index)
    for module in model.modules():  # (fixed buffers, such as a window attention's index, are written again)
        fill = getattr(module, "fill_buffers", None)
        if callable(fill):
            fill()
    model.xconv_spec = spec  # type: ignore[assignment]  # torch types Module attributes as tensors or modules only
    model.xconv_dtype = dtype  # type: ignore[assignment]
    set_weights(model, infos, weights)
    # Inference mode, like a Keras call without ``training``: tm(x) and km(x) agree out of the box. Training
    # loops call model.train(), as torch's own do.
    return model.eval()


def owns_model(obj: Any) -> bool:
    return isinstance(obj, nn.Module)


def owns_tensor(obj: Any) -> bool:
    return isinstance(obj, torch.Tensor)


def spec_of(model: nn.Module) -> Sequential | None:
    """The spec ``model`` was built from; if the model was edited since (see :func:`structure`), the spec of
    the model as it is now, imported again and checked, or an XconvError (``xconv._api.current_spec``)."""
    from .._api import current_spec

    return current_spec(sys.modules[__name__], model)


def seal(model: nn.Module) -> None:
    """Record the structure of a freshly built model (``xconv.build`` calls it), so that ``spec_of`` sees edits."""
    model.xconv_structure = structure(model)  # type: ignore[assignment]  # torch types Module attributes as tensors or modules only


#: module attributes that are state or bookkeeping, not architecture: what every ``nn.Module`` has (the
#: parameters, buffers and submodules, listed apart; hooks; the train/eval flag), torch.compile's cache, and the
#: fx ``Graph`` object (the code generated from it, ``_code``, is what runs, and is compared)
_NOT_ARCHITECTURE = frozenset(vars(nn.Module())) | {"_compiled_call_impl", "_graph"}


def structure(model: nn.Module) -> tuple[tuple[str, str, Any], ...]:
    """What makes ``model`` the function it is, apart from its weights, as plain values that compare equal when
    nothing changed: per submodule (qualified name) its type, its non-tensor attributes (``vars(m)`` without
    the parameters, buffers, submodules, hooks and train/eval flag; a graph's generated code; see
    ``xconv._api.plain_value``) and its parameters' and buffers' names and shapes. Training, ``train()`` /
    ``eval()``, ``.to(...)``, hooks and ``requires_grad_`` change none of it. About 2 ms for a ResNet-50-sized
    model (152 modules)."""
    from .._api import plain_value

    rows = []
    for name, m in model.named_modules(remove_duplicate=False):
        attrs = [
            (k, plain_value(v))
            for k, v in vars(m).items()
            if k not in _NOT_ARCHITECTURE and "hook" not in k and not k.startswith("xconv_")
        ]
        attrs.sort()
        tensors = [
            (k, None if t is None else tuple(t.shape), group)
            for group, table in (("parameter", m._parameters), ("buffer", m._buffers))
            for k, t in table.items()
        ]
        kind = type(m)
        rows.append((name, kind.__name__, (kind.__module__, kind.__qualname__, tuple(attrs), tuple(tensors))))
    return tuple(rows)


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
            key = f"{info.key}.{name}"
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
    return {f"{i.key}.{n}": tensors[f"{i.key}.{n}"].detach() for i in infos for n in i.params}


def import_tensors(model: nn.Module, infos: list[LayerInfo], arrays: dict[str, Any]) -> None:
    """Copy canonical DLPack tensors (same dtype, shapes checked by the spec) into the model, one pass each."""
    tensors = _tensors(model)
    with torch.no_grad():
        for key, array in arrays.items():
            if isinstance(array, np.ndarray):
                source = torch.from_numpy(np.array(array, order="C"))
            else:
                source = array if isinstance(array, torch.Tensor) else torch.from_dlpack(array)  # type: ignore[attr-defined]  # exported by torch, not marked so
            tensors[key].copy_(source)


def permute(x: torch.Tensor, perm: tuple[int, ...]) -> torch.Tensor:
    return x.permute(*perm).contiguous()


class _Mode:
    """``with _Mode(model, training):`` runs in that mode and restores the model's own afterwards."""

    def __init__(self, model: nn.Module, training: bool) -> None:
        # every submodule's own flag: a BatchNorm frozen with bn.eval() inside a training model stays frozen
        self.model, self.training, self.was = model, training, [(m, m.training) for m in model.modules()]
        self.caches: Any = None

    def __enter__(self) -> None:
        from ..importers._torch_mutation import KeptCaches

        self.caches = KeptCaches(self.model)  # (a module's train() may empty its caches: put back after)
        if any(flag != self.training for _, flag in self.was):  # (a model in that mode already runs as it is)
            self.model.train(self.training)

    def __exit__(self, *exc: object) -> None:
        for m, flag in self.was:
            m.training = flag
        if self.caches is not None:
            self.caches.restore()


def infos_of(model: nn.Module) -> list[LayerInfo]:
    from ..shapes import infer

    return infer(cast(Sequential, model.xconv_spec))


def forward(model: nn.Module, x: np.ndarray, output: str | list[str] | None = None, **side: np.ndarray | None) -> Any:
    """Run ``model`` in inference mode (eval) on an NCHW (or (N, F)) numpy batch; returns numpy in the same
    logical layout (a dict-returning model: its entry ``output``, or its one entry). The model's own modes and
    every buffer (a forward may write one) are put back afterwards. ``side``: a text encoder's
    ``padding_mask`` and ``token_types`` (None: left out): an xconv model takes them by name, another model
    as the arguments after the ids, in that order (one that takes both is given both)."""
    return _run_kept(model, x, output, False, side)


def forward_training(
    model: nn.Module, x: np.ndarray, output: str | list[str] | None = None, **side: np.ndarray | None
) -> Any:
    """Run ``model`` as it is (a hand-written model in its own modes, module by module; a model built by xconv in
    training mode) on an NCHW (or (N, F)) numpy batch, without gradients; every buffer (BatchNorm's running
    statistics and count) and every mode is put back afterwards."""
    return _run_kept(model, x, output, True if spec_of(model) is not None else None, side)


def _run_kept(
    model: nn.Module, x: np.ndarray, output: str | list[str] | None, training: bool | None, side: dict[str, Any]
) -> Any:
    """One call without gradients in mode ``training`` (None: the modes the model has), its state put back."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = _Mode(model, bool(training))
    try:
        with torch.no_grad():
            if training is not None:
                modes.__enter__()
            xt = torch.from_numpy(np.ascontiguousarray(x))
            given = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in side.items() if v is not None}
            if getattr(model, "xconv_spec", None) is not None:  # (xconv's models name them)
                y = model(xt, **given)
            else:  # a forward's arguments after the ids, in order
                y = model(xt, *(given[name] for name in SIDE_INPUTS if name in given))
    finally:
        modes.__exit__()
        with torch.no_grad():
            for b, value in buffers:
                b.copy_(value)
    return _numpy_output(y, output)


def _numpy_output(y: Any, output: str | list[str] | None) -> Any:
    """A forward's result as numpy: a tensor's array; a list (or tuple) of tensors, the list of their arrays;
    a dict (a Hugging Face output), its entry ``output`` (or its first), the same way."""
    if isinstance(y, dict) and isinstance(output, (list, tuple)):
        y = [y[k] for k in output]
    elif isinstance(y, dict):
        y = y[output] if output is not None else next(iter(y.values()))
    if isinstance(y, (list, tuple)):
        return [_numpy_output(part, None) for part in y]
    return y.numpy()


def _apply(model: nn.Module, info: LayerInfo, x: Any, side: dict[str, Any]) -> Any:
    """One layer node of a built model on ``x``: its module, or (a graph's layer scale) its parameter."""
    if info.kind == "LayerScale" and not isinstance(model, nn.Sequential):
        return model.get_parameter(f"{info.key}.layer_scale") * x
    read = reads_side(info)
    if read is not None:
        return model.get_submodule(info.key)(x, side.get(read))
    return model.get_submodule(info.key)(x)


def trace(
    model: nn.Module,
    x: np.ndarray,
    upstream: Any,
    training: bool = False,
    **side: np.ndarray | None,
) -> tuple[list[np.ndarray], np.ndarray | None, dict[str, np.ndarray]]:
    """Every layer's output, and the gradients of sum(output * upstream) with respect to the input and every
    trainable weight (canonical keys), all as numpy in canonical layout; in eval mode, or in train mode with
    ``training`` (BatchNorm running statistics are then updated once)."""
    model.zero_grad(set_to_none=True)
    ids = x.dtype.kind in "iu"  # token ids: no gradient
    xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(not ids)
    values: dict[int, Any] = {-1: xt}
    given = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in side.items() if v is not None}
    outs = []
    with _Mode(model, training):
        for info in infos_of(model):
            args = [values[i] for i in info.inputs]
            join = info.is_join
            values[info.index] = (
                _join(info, args, model.training, model) if join else _apply(model, info, args[0], given)
            )
            outs.append(values[info.index].detach().numpy().copy())
    infos = infos_of(model)
    loss = sum(
        (values[info.index] * torch.from_numpy(np.ascontiguousarray(u))).sum()
        for info, u in zip(model_outputs(infos), upstreams(infos, upstream))
    )
    cast(torch.Tensor, loss).backward()  # type: ignore[no-untyped-call]  # untyped in torch
    grads = {
        k: (np.zeros(tuple(p.shape), dtype=x.dtype) if p.grad is None else p.grad.numpy().copy())
        for k, p in model.named_parameters(remove_duplicate=False)
    }
    return outs, None if ids else xt.grad.numpy().copy(), grads  # type: ignore[union-attr]


def train(
    model: nn.Module,
    batches: Iterable[tuple[Any, ...]],
    optimizer: dict[str, Any],
    on_step: Callable[[int, float], None] | None = None,
) -> np.ndarray:
    """Train in place with the native optimizer and mean cross-entropy, one step per batch ``(x, y)`` or ``(x, y, side)`` (x NCHW
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
    for t, (x, y, *side) in enumerate(batches):  # (a text encoder's: its padding mask and token types, by name)
        model.train()
        opt.zero_grad(set_to_none=True)
        given = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in (side[0] if side else {}).items()}
        loss = F.cross_entropy(model(torch.from_numpy(np.ascontiguousarray(x)), **given), torch.from_numpy(y))
        loss.backward()  # type: ignore[no-untyped-call]  # untyped in torch
        opt.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(t, losses[-1])
    return np.asarray(losses)


def import_model(module: nn.Module, input_shape: tuple[int, ...], output: str | list[str] | None = None) -> Any:
    from ..importers.torch_fx import import_model as run

    return run(module, input_shape, output)


def read_state_dict(path: str) -> dict[str, Any]:
    """A torch state_dict file, read with ``weights_only=True``: tensors and containers only, never code."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"it holds a {type(state).__name__}, not a state_dict")
    return state


def write_state_dict(model: nn.Module, path: str) -> None:
    torch.save(model.state_dict(), path)
