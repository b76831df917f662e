"""Importing hand-written models and porting them to the other framework."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._api import build_with_weights, get_weights, spec_of
from ._verify import _SHORT_LINES, ROUNDING_FACTOR, _rounding_check, _short  # noqa: F401 - (re-exported)
from .backends import backend_of_model, canonical_name, get_backend
from .errors import UnsupportedLayerError, XconvError
from .spec import Sequential
from .weights import weights_dtype

__all__ = ["from_keras", "from_torch", "port"]


def from_torch(
    model: Any,
    input_shape: tuple[int, ...] | None = None,
    *,
    return_weights: bool = False,
    output: str | list[str] | None = None,
    input_dtype: str | None = None,
    padding_mask: bool = False,
    token_types: bool = False,
) -> Any:
    """The spec of a hand-written torch module, read from its ``torch.export`` program (``torch.fx`` where it
    cannot be exported): any graph of layers, residual additions, gating products and concatenations, every
    layer named by its module's qualified name so that the canonical weights have the keys of
    ``model.state_dict()``; ``nn.ZeroPad2d`` folds into the conv after it where exact. With
    ``return_weights=True``, ``(spec, canonical weights)``. Unsupported operations raise
    :class:`UnsupportedLayerError` naming the operation and what is supported. A model that returns a dict of
    tensors (torchvision's segmentation models return ``{"out": ...}``) is imported for its entry ``output``;
    without ``output`` the dict must hold exactly one entry. A model that returns several tensors (a list or
    tuple, as timm's ``features_only`` backbones; or ``output=[...]``, several entries of a dict, in that order;
    or an entry that is a tuple of tensors) imports as a spec with ``outputs``, whose models return the list.

    ``model`` may also be a ``torch.export.ExportedProgram`` or the path of a ``.pt2`` archive of one
    (``torch.export.save``): its calls are read as the functions they are, under the program's own keys, and
    ``input_shape`` may be left out (the program's own, which it must be).

    ``input_dtype="int64"``: the model takes token ids (a text encoder such as BERT), a batch of shape (N, L)
    with ``input_shape=(L,)``; the import runs it on ids below the smallest vocabulary of its ``nn.Embedding``
    modules. The default takes numbers (float32 or float64, as the model's parameters); a model built by xconv
    takes what its spec does. ``padding_mask=True``: the forward's second argument is a padding mask of the
    ids' shape, 1 for a token and 0 for padding (Hugging Face's ``attention_mask``); an attention that keeps its
    queries off the padding keys, and nothing else, reads it (:class:`xconv.SelfAttention`'s ``padding_mask``).
    ``token_types=True``: the forward's next argument (after the padding mask, where it takes one) is the token
    types, integers of the ids' shape (Hugging Face's ``token_type_ids``); an ``nn.Embedding`` whose lookup is
    added to the tokens, and nothing else, reads them (:class:`xconv.TokenTypeEmbedding`'s ``token_types``).

    >>> spec, weights = from_torch(torchvision.models.resnet18().eval(), (3, 224, 224), return_weights=True)  # doctest: +SKIP
    >>> spec = from_torch(transformers.BertModel(config).eval(), (128,), input_dtype="int64")  # doctest: +SKIP
    """
    from ._normalize import as_shape

    backend = get_backend("torch")
    model = _program_source(model, "from_torch")
    if not backend.owns_model(model):
        raise XconvError(
            "from_torch: expected a torch.nn.Module, a torch.export.ExportedProgram or a .pt2 path. Received: "
            f"{type(model).__name__}"
        )
    if input_shape is None and _is_exported(model):
        input_shape = model.input_shape
    shape = as_shape("from_torch", input_shape)
    _check_materialized(model, "from_torch")
    _check_float_params(model, "from_torch")
    output = _output_keys(output, "from_torch")
    vocabulary = _token_vocabulary(model, input_dtype, "from_torch") if _takes_ids(input_dtype, "from_torch") else None
    built = getattr(model, "xconv_spec", None)  # (as built: the ids it takes stay, whatever was edited since)
    if input_dtype is None and isinstance(built, Sequential):  # a model built by xconv: its spec says what it takes
        from .graph import side_inputs, token_vocabulary
        from .shapes import infer

        infos = infer(built)
        vocabulary = token_vocabulary(infos)
        padding_mask = padding_mask or "padding_mask" in side_inputs(infos)
        token_types = token_types or "token_types" in side_inputs(infos)
    for flag, value in (("padding_mask", padding_mask), ("token_types", token_types)):
        if not isinstance(value, bool):
            raise XconvError(f"from_torch: `{flag}` must be True or False. Received: {value!r}")
        if value and vocabulary is None:
            raise XconvError(f'from_torch: {flag}=True marks the token ids: give input_dtype="int64"')
    if vocabulary is not None and len(shape) != 1:
        raise XconvError(f"from_torch: token ids come as a batch (N, L): input_shape=(L,). Received: {shape}")
    from .importers.torch_checks import PADDING_MASK, TOKEN_IDS, TOKEN_TYPES

    types = _smallest_table(model) if token_types else None  # (the types' table is one of them)
    token, masked, typed = TOKEN_IDS.set(vocabulary), PADDING_MASK.set(padding_mask), TOKEN_TYPES.set(types)
    try:
        spec, weights = backend.import_model(model, shape, output)
    except UnsupportedLayerError as e:
        if vocabulary is not None or not _has_embeddings(model):
            raise
        raise UnsupportedLayerError(
            'from_torch: the model has nn.Embedding layers; if it takes token ids, give input_dtype="int64". '
            f"Read as taking numbers: {e}"
        ) from None
    finally:
        TOKEN_IDS.reset(token)
        PADDING_MASK.reset(masked)
        TOKEN_TYPES.reset(typed)
    return (spec, weights) if return_weights else spec


def _output_keys(output: Any, who: str) -> str | list[str] | None:
    """``output`` as given: None, a dict entry's name, or a list of several (returned in that order)."""
    if output is None or isinstance(output, str):
        return output
    keys = list(output) if isinstance(output, (list, tuple)) else None
    if not keys or any(not isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise XconvError(
            f"{who}: `output` must be the name of a dict entry, or a list of distinct names. Received: {output!r}"
        )
    return keys


def _source_side(
    model: Any, source: str, padding_mask: bool, token_types: bool
) -> tuple[dict[str, int], frozenset[str]]:
    """What a hand-written source model takes beside its token ids (see :func:`xconv._verify.verify_port`):
    a torch model what its user said, a Keras model what its inputs are; the number of token types is the
    smallest table of its embeddings. And those it requires (a torch forward without a default for them)."""
    if get_backend(source).spec_of(model) is not None:
        return {}, frozenset()
    required: frozenset[str] = frozenset()
    if source == "torch":
        taken = [name for name, flag in (("padding_mask", padding_mask), ("token_types", token_types)) if flag]
        rows = _smallest_table(model) if token_types else 0
        required = _required(model, taken)
    else:
        from .importers._keras_text import input_roles, smallest_table

        taken = [role for role in input_roles(model) if role != "ids"]
        rows = smallest_table(model)
    return {name: rows if name == "token_types" else 0 for name in taken}, required


def _required(model: Any, taken: list[str]) -> frozenset[str]:
    """The side inputs among ``taken`` (the forward's arguments after the ids, in order) that a torch model's
    forward requires (it has no default for them), and those before them."""
    import inspect

    try:
        params = list(inspect.signature(model.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return frozenset(taken)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    needed = [i for i, (_, p) in enumerate(zip(taken, positional)) if p.default is inspect.Parameter.empty]
    return frozenset(taken[: needed[-1] + 1] if needed else ())  # (and those before: they are positional)


def _smallest_table(model: Any) -> int:
    """The rows of the smallest ``nn.Embedding`` of a torch model (token types are drawn below it)."""
    sizes = [int(m.num_embeddings) for m in model.modules() if type(m).__name__ == "Embedding"]
    sizes += [int(m.weight.shape[0]) for m in model.modules() if type(m).__name__ == "TokenTypeEmbeddingModule"]
    if not sizes:
        raise XconvError("from_torch: token_types=True, but the model has no nn.Embedding to look them up")
    return min(sizes)


#: what ``input_dtype`` may be: token ids, or numbers (float32 or float64, as the model is)
_ID_DTYPES = ("int64", "int32", "long", "int")
_NUMBER_DTYPES = ("float32", "float64", "float")


def _takes_ids(input_dtype: Any, who: str) -> bool:
    if input_dtype is None or input_dtype in _NUMBER_DTYPES:
        return False
    if input_dtype in _ID_DTYPES:
        return True
    raise XconvError(
        f'{who}: `input_dtype` is "int64" for a model that takes token ids, or None (numbers). Received: '
        f"{input_dtype!r}"
    )


def _has_embeddings(model: Any) -> bool:
    from .backends._torch_env import nn

    return isinstance(model, nn.Module) and any(isinstance(m, nn.Embedding) for m in model.modules())


def _token_vocabulary(model: Any, input_dtype: Any, who: str) -> int:
    """The ids below which the import draws the batch it exports the model for: the smallest vocabulary of the
    model's ``nn.Embedding`` modules (each of them can look them up). The importer then draws its probes below
    the vocabulary of the embeddings that look up the input itself."""
    from .backends._torch_env import nn

    sizes = [int(m.num_embeddings) for m in model.modules() if isinstance(m, nn.Embedding)]
    if not sizes:
        raise XconvError(
            f"{who}: input_dtype={input_dtype!r} says the model takes token ids, but it has no nn.Embedding to "
            "look them up"
        )
    return min(sizes)


def _program_source(model: Any, who: str) -> Any:
    """An exported program (or a ``.pt2`` path) as the torch module that runs it; anything else as it is."""
    cls = type(model)
    program = cls.__name__ == "ExportedProgram" and cls.__module__.startswith("torch.")
    if program or (isinstance(model, (str, os.PathLike)) and os.fspath(model).lower().endswith(".pt2")):
        from .importers.torch_program import as_source

        return as_source(model, who)
    return model


def _is_exported(model: Any) -> bool:
    """Whether ``model`` is xconv's module form of an exported program (checked without importing torch)."""
    cls = type(model)
    return cls.__name__ == "ExportedModel" and cls.__module__ == "xconv.importers.torch_program"


def _check_materialized(model: Any, who: str) -> None:
    """Parameters with values: not on the meta device, not a lazy module's uninitialised parameter."""
    import itertools

    for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        if type(t).__name__ in ("UninitializedParameter", "UninitializedBuffer"):
            raise XconvError(
                f"{who}: {name!r} is not initialised yet (a lazy module such as nn.LazyConv2d); run the model once "
                "on a batch of its input shape first, so that its parameters get their shapes and values"
            )
        if t.device.type == "meta":
            raise XconvError(
                f"{who}: {name!r} is on the meta device, with a shape but no values; create the model on the CPU, "
                "or call model.to_empty(device='cpu') and load its weights, before importing it"
            )


def _check_keras_compute(model: Any, who: str) -> None:
    """Refuse a Keras model whose layers compute in float16 or bfloat16 (a mixed precision dtype policy): the
    spec describes the function, but a port builds it in float32 or float64."""
    flatten = getattr(model, "_flatten_layers", None)  # (Keras 3: every layer, nested models' too)
    for layer in flatten(include_self=False) if flatten is not None else model.layers:
        compute = getattr(getattr(layer, "dtype_policy", None), "compute_dtype", "float32")
        if "float" in str(compute) and str(compute) not in ("float32", "float64"):
            raise XconvError(
                f"{who}: layer {layer.name!r} computes in {compute} (dtype policy "
                f"{getattr(layer.dtype_policy, 'name', compute)!r}); xconv models are float32 or float64: rebuild the "
                "model under keras.config.set_dtype_policy('float32') and copy the weights"
            )


def _check_float_params(model: Any, who: str) -> None:
    """xconv models are float32 or float64: other precisions (float16, bfloat16) are refused, by name."""
    import itertools

    for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        kind = str(t.dtype).replace("torch.", "")
        if t.is_floating_point() and kind not in ("float32", "float64"):
            raise XconvError(
                f"{who}: {name!r} is {kind}; xconv models are float32 or float64 (call model.float() "
                "or model.double() first)"
            )


def from_keras(
    model: Any,
    *,
    return_weights: bool = False,
    output: str | list[str] | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> Any:
    """The spec of a Keras ``Sequential`` or functional model (input shape from the model), layers named by their
    Keras names: ``Add``, ``Multiply`` and ``Concatenate`` become combinators, a fused activation its own layer,
    ``ZeroPadding2D`` folds into the next 'valid' conv where exact. With ``return_weights=True``,
    ``(spec, canonical weights)``. Unsupported layers raise :class:`UnsupportedLayerError` naming the layer.

    A text encoder takes its token ids, then a padding mask and token types where it reads them (see
    :func:`from_torch`), as a list or as a dict (keras-hub's ``token_ids``, ``padding_mask``,
    ``segment_ids``). ``output``: the entry of a model that returns a dict (keras-hub's ``sequence_output``).
    ``input_shape=(L,)``: the sequence length of a text encoder whose inputs take any (``(None, None)``).

    >>> import keras, xconv as xc
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu", name="conv")])
    >>> [layer.kind for layer in xc.from_keras(model).layers]
    ['Conv2d', 'ReLU']
    """
    backend = get_backend("tf")
    if not backend.owns_model(model):
        raise XconvError(f"from_keras: expected a keras.Model. Received: {type(model).__name__}")
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs:
        raise XconvError(
            f"from_keras: the model {model.name!r} has no input yet (a Sequential without keras.Input, never "
            "called); start it with keras.Input((H, W, C)) or call model.build((None, H, W, C)) first"
        )
    structure = getattr(model, "_outputs_struct", None)
    from .importers._keras_text import _takes_side_inputs

    sides = len(inputs) > 1 and _takes_side_inputs(model)  # token ids, their padding mask and token types
    output = _output_keys(output, "from_keras")
    if output is not None:
        keys = [output] if isinstance(output, str) else output
        missing = [k for k in keys if not isinstance(structure, dict) or k not in structure]
        if missing:
            entries = f"its entries are {sorted(structure)}" if isinstance(structure, dict) else "it returns no dict"
            raise XconvError(f"from_keras: output={output!r} names an entry of the model's dict output; {entries}")
        outputs = [structure[k] for k in keys]  # type: ignore[index]
        structure = None
    length = None
    if input_shape is not None:  # (a text encoder's length, where its inputs take any; else the model's own)
        from ._normalize import as_shape
        from .importers._keras_text import ids_input

        given = as_shape("from_keras", input_shape)
        own = tuple(ids_input(model).shape[1:])
        logical = (own[2], own[0], own[1]) if len(own) == 3 else own
        if own == (None,) and len(given) == 1:
            length = given[0]
        elif tuple(given) != tuple(logical):
            raise XconvError(
                f"from_keras: input_shape={tuple(given)}, but the model takes {logical} (in xconv's layout); "
                "input_shape=(L,) gives the length of a text encoder whose inputs take any"
            )
    listed = isinstance(structure, (list, tuple)) and all(not isinstance(t, (list, tuple, dict)) for t in structure)
    if len(inputs) != 1 and not sides or isinstance(structure, (dict, list, tuple)) and not listed:
        what = f"a {type(structure).__name__} of {len(outputs)}" if isinstance(structure, (dict, list, tuple)) else ""
        raise XconvError(
            f"from_keras: the model {model.name!r} takes {len(inputs)} input(s) and returns "
            f"{what or len(outputs)} output(s); xconv ports a model with one input (a text encoder's token ids, then "
            "a padding mask and token types) that returns one tensor or a flat list of them"
            + (": give output= (one of its entries, or a list of them)" if isinstance(structure, dict) else "")
        )
    for v in model.weights:
        if "float" in str(v.dtype) and str(v.dtype) not in ("float32", "float64"):
            raise XconvError(f"from_keras: {v.path!r} is {v.dtype}; xconv models are float32 or float64")
    spec, weights = backend.import_model(model, length, output)
    return (spec, weights) if return_weights else spec


def _import(
    model: Any,
    input_shape: tuple[int, ...] | None,
    output: str | list[str] | None = None,
    input_dtype: str | None = None,
    padding_mask: bool = False,
    token_types: bool = False,
) -> tuple[str, Sequential, dict[str, np.ndarray]]:
    backend = backend_of_model(model)
    if backend is None:
        raise XconvError(
            "port: expected a torch.nn.Module, a torch.export.ExportedProgram (or .pt2 path) or a keras.Model. "
            f"Received: {type(model).__name__}"
        )
    if backend.spec_of(model) is not None:  # built by xconv
        if backend.NAME == "torch":  # hooks change what a built model computes, as a hand-written one's
            from .importers.torch_checks import _check_calls

            _check_calls(model)
        return backend.NAME, spec_of(model), get_weights(model)
    if backend.NAME == "torch":
        if input_shape is None and _is_exported(model):  # an exported program: its own input shape
            input_shape = model.input_shape
        if input_shape is None:
            raise XconvError("port: a torch model needs input_shape=(C, H, W) (torch modules do not record it)")
        spec, weights = from_torch(
            model,
            input_shape,
            return_weights=True,
            output=output,
            input_dtype=input_dtype,
            padding_mask=padding_mask,
            token_types=token_types,
        )
    else:
        _check_keras_compute(model, "port")
        spec, weights = from_keras(model, return_weights=True, output=output, input_shape=input_shape)
    return backend.NAME, spec, weights


def port(
    model: Any,
    to: str,
    input_shape: tuple[int, ...] | None = None,
    verify: bool = True,
    *,
    seed: int = 0,
    output: str | list[str] | None = None,
    input_dtype: str | None = None,
    padding_mask: bool = False,
    token_types: bool = False,
) -> Any:
    """Import ``model`` (torch or Keras, hand-written or built by xconv), build the same spec in framework
    ``to`` and copy the weights. The source model is left exactly as it was: every module's train/eval flag
    and every buffer.

    With ``verify`` (the default) both native models run on batches drawn from ``seed`` and what they return is
    compared as it comes out of each (a flat vector as the model returns it, a map NCHW in torch and NHWC in
    Keras): a standard-normal batch, the same batch times 100 and an input with exact zeros (an image with an
    all-zero border; see ``xconv._compare.VERIFY_BATCHES``), each group compared at its own scale. A torch source in training mode is
    also compared in training mode (BatchNorm on batch statistics, unless the spec draws random masks); its
    statistics are put back afterwards. A :class:`PortError` is raised when max |a - b| / max(1, max |a|)
    exceeds 1e-5 (float32) or 1e-10 (float64), or anything is NaN/Inf. A deep float32 network's own rounding can
    exceed 1e-5; beyond it, both models are compared with the spec computed in float64 (same weights) and each
    may be off by up to ten times the rounding error of an xconv float32 build of that spec, measured on the
    same batch; the error message gives the three distances and says which side is off: the source (the
    importer missed something it computes) or the ported model.

    ``output``: for a model that returns a dict, the entry to port, or a list of entries (see
    :func:`from_torch` and :func:`from_keras`). A model that returns several tensors is ported whole: both
    models return the list, and each output is compared at its own scale. ``input_shape`` of a Keras text encoder whose inputs take any length: ``(L,)``, the
    length to port it at.
    ``input_dtype="int64"``: a torch model that takes token ids (see :func:`from_torch`); the batches are then
    random ids and ids at both ends of the vocabulary. A spec (or a Keras model) with Embedding layers first
    takes ids without it. ``padding_mask=True``: the torch model's second argument is a padding mask (see
    :func:`from_torch`); the batches are then checked with padding masks too, and without any.
    ``token_types=True``: its next argument is the token types (see :func:`from_torch`); the batches are then
    checked with random token types too, and without any (every token of type 0).

    ``model`` may be a ``torch.export.ExportedProgram`` or a ``.pt2`` path (``input_shape`` then defaults to the
    program's): the program is the model in the mode it was exported in, and is verified as such.

    >>> km = port(torch_model, to="tf", input_shape=(3, 32, 32))   # doctest: +SKIP
    """
    target = canonical_name(to)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise XconvError(f"port: `seed` must be a non-negative integer. Received: {seed!r}")
    if not isinstance(verify, bool):
        raise XconvError(f"port: `verify` must be True or False. Received: {verify!r}")
    model = _program_source(model, "port")
    _takes_ids(input_dtype, "port")
    source, spec, weights = _import(model, input_shape, output, input_dtype, padding_mask, token_types)
    if output is not None and get_backend(source).spec_of(model) is not None:
        raise XconvError("port: `output` chooses an entry of a hand-written model's returned dict")
    dtype = weights_dtype(weights)
    out = build_with_weights(spec, target, weights, dtype=dtype)  # no initial weights drawn and overwritten
    if verify:
        from ._verify import verify_port

        side, required = _source_side(model, source, padding_mask, token_types)
        verify_port(model, out, spec, weights, (source, target), dtype, int(seed), output, side, required)
    return out
