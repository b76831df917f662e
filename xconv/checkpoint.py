"""xconv checkpoints: one ``.safetensors`` file holding canonical weights, with the spec (JSON), a format
version and a SHA-256 digest in its metadata. Nothing in a file is ever executed: safetensors holds raw tensors
and JSON text.

Format 2 (written since this version): the digest covers every metadata entry (format, version, spec) and
every tensor's name, dtype, shape and bytes, so any change to the header or the data (a flipped bit, a layer
kind or a number rewritten in the spec, a tensor's dtype) is an error on load. Format 1 files (older xconv,
other tools) still load: their digest, when they have one, covers the tensors only, so their spec is unchecked
(``xconv summary`` says so; saving them again writes format 2)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import shapes
from .errors import XconvError
from .spec import Sequential, from_dict
from .weights import check_weights, single_dtype, weights_dtype

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "digest", "has_digest", "load", "load_model", "save"]

CHECKPOINT_FORMAT = "xconv.checkpoint"
CHECKPOINT_VERSION = "2"
#: versions ``load`` reads: 2 (digest over header and tensors) and 1 (digest, if any, over the tensors only)
READABLE_VERSIONS = ("1", "2")


def _safetensors() -> Any:
    try:
        import safetensors.numpy
    except ImportError as e:  # pragma: no cover - a dependency of xconv
        raise XconvError("xconv checkpoints need the safetensors package: pip install safetensors") from e
    return safetensors


def save(path: str | os.PathLike[str], model_or_spec: Any, weights: Mapping[str, Any] | None = None) -> None:
    """Write ``path`` (a ``.safetensors`` file): canonical weights, plus the spec, format version and a digest of
    both in its metadata (see the module docstring). ``save(path, model)`` takes a model built by xconv (either
    framework; one edited since its build is saved as it is now, see :func:`xconv.spec_of`);
    ``save(path, spec, weights)`` takes a spec with its input shape and canonical weights, all float32 or all
    float64 (a mix is a :class:`WeightError` naming the odd arrays: cast them to one dtype first).

    Written to a temporary file in the same folder and renamed into place, so an interrupted save never
    leaves a half-written file where the old one was. The file also loads with
    ``safetensors.numpy.load_file`` and, for torch users, straight into the built model's ``load_state_dict``.

    >>> import os, tempfile, xconv as xc
    >>> spec = xc.Sequential(xc.Conv2d(3, 8, 3), input_shape=(3, 8, 8))
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> xc.save(path, xc.build(spec, "numpy", seed=0))
    >>> xc.load(path)[0] == xc.spec_of(xc.build(spec, "numpy"))
    True
    """
    from ._api import get_weights, spec_of

    if isinstance(model_or_spec, Sequential):
        if weights is None:
            raise XconvError("save(path, spec, weights): weights are required when saving a spec")
        spec, infos = shapes.resolve(model_or_spec)
        dtype = single_dtype(weights, "cast them to one dtype first (xconv models are float32 or float64)")
        arrays = check_weights(infos, weights, dtype)
    else:
        if weights is not None:
            raise XconvError("save(path, model): pass weights only together with a spec")
        spec = spec_of(model_or_spec)
        if "torch" in sys.modules and isinstance(model_or_spec, sys.modules["torch"].nn.Module):
            from .importers.torch_checks import _check_calls  # hooks change what the model computes: not in the spec

            _check_calls(model_or_spec)
        arrays = get_weights(model_or_spec)
    arrays = {k: np.require(v, requirements="C") for k, v in arrays.items()}
    metadata = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "spec": json.dumps(spec.to_dict())}
    metadata["sha256"] = digest(arrays, metadata)
    target = _writable_target(path)
    folder = os.path.dirname(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".xconv-", suffix=".tmp", dir=folder)
    except OSError as e:
        raise XconvError(f"cannot write {os.fspath(path)}: {e.strerror or e}") from None
    os.close(fd)
    try:
        _safetensors().numpy.save_file(arrays, tmp, metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, Exception) and not isinstance(e, XconvError):
            raise XconvError(f"cannot write {os.fspath(path)}: {e}") from None  # a full disk, a vanished folder
        raise


def digest(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> str:
    """SHA-256 over the ``metadata`` entries (all but ``"sha256"`` itself, in key order), then every tensor's key,
    dtype, shape and bytes, in key order: stored in a checkpoint's metadata and checked on load, so a flipped
    byte anywhere in the file is an error instead of a different model. Without ``metadata``, the tensors alone
    (what format 1 files store).

    >>> import numpy as np
    >>> a = {"0.bias": np.zeros(2, np.float32)}
    >>> digest(a, {"spec": "{}"}) == digest(a, {"spec": "{ }"}), digest(a) == digest(a, {})
    (False, False)
    """
    h = hashlib.sha256()
    if metadata is not None:
        entries = sorted((str(k), str(v)) for k, v in metadata.items() if k != "sha256")
        h.update(json.dumps(["xconv.checkpoint.metadata", entries]).encode())
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(json.dumps([key, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _writable_target(path: Any) -> str:
    """The file a save writes: a symlink's target (saving through a link writes where it points, as
    ``torch.save`` does, also through a broken link into an existing folder); a broken link into a missing
    folder, a looping link and a read-only existing file are refused."""
    if not isinstance(path, (str, os.PathLike)):
        raise XconvError(f"save: the path must be a str or os.PathLike. Received: {type(path).__name__}")
    name = os.fspath(path)
    if os.path.islink(name) and not os.path.exists(name):  # a broken link: written through only into a folder
        try:
            os.path.realpath(name, strict=True)
        except FileNotFoundError:
            if not os.path.isdir(os.path.dirname(os.path.realpath(name))):
                raise XconvError(
                    f"cannot write {name}: it is a symbolic link to {os.readlink(name)}, whose folder does not exist"
                ) from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise XconvError(f"cannot write {name}: it is a symbolic link that loops back on itself") from None
    target = os.path.realpath(name)
    if os.path.isdir(target):
        raise XconvError(f"cannot write {os.fspath(path)}: it is a directory")
    if os.path.exists(target) and not os.stat(target).st_mode & stat.S_IWUSR:
        raise XconvError(f"cannot write {os.fspath(path)}: the file is read-only")
    return target


def _mode_for(target: str) -> int:
    """An existing file keeps its mode; a new one gets what the umask allows, as open() would give it."""
    if os.path.exists(target):
        return stat.S_IMODE(os.stat(target).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


#: what a checkpoint's metadata may ask for before it is parsed
MAX_SPEC_CHARS = 16 * 2**20
MAX_SPEC_DEPTH = 64


def _json_depth(text: str) -> int:
    """The deepest nesting of brackets in a JSON text (strings skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def load(path: str | os.PathLike[str], *, dtype: Any = None) -> tuple[Sequential, dict[str, np.ndarray]]:
    """Read an xconv checkpoint: ``(spec, weights)``. A missing, truncated, corrupted (tensors or header, see the
    module docstring), non-xconv or inconsistent file raises :class:`XconvError` saying why.

    ``dtype`` (``"float32"`` or ``"float64"``) casts every float weight to it; by default the weights keep the
    file's dtype, and a file mixing float32 and float64 tensors (not one xconv writes) is a :class:`WeightError`
    naming them, since either dtype would change some: pass ``dtype`` to choose.

    >>> import os, tempfile, xconv as xc
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> xc.save(path, xc.build(xc.Sequential(xc.Conv2d(3, 8, 3), input_shape=(3, 8, 8)), "numpy", seed=0))
    >>> spec, weights = xc.load(path)
    >>> sorted(weights), weights["0.weight"].dtype.name
    (['0.bias', '0.weight'], 'float64')
    """
    fix = "pass dtype='float64' (keeps every value) or dtype='float32' (rounds the float64 ones)"
    return _load(path, dtype, fix)


def _load(path: Any, dtype: Any, fix: str) -> tuple[Sequential, dict[str, np.ndarray]]:
    """:func:`load`, with ``fix`` ending the error for a file of mixed float dtypes and no ``dtype`` (the command
    line names its own option there)."""
    from ._api import _dtype_name

    if not isinstance(path, (str, os.PathLike)):
        raise XconvError(f"load: the path must be a str or os.PathLike. Received: {type(path).__name__}")
    target = os.fspath(path)
    dtype_name = None if dtype is None else _dtype_name(dtype)
    st = _safetensors()
    if os.path.exists(target) and not stat.S_ISREG(os.stat(target).st_mode):
        raise XconvError(f"{target} is not a regular file")
    try:
        with st.safe_open(target, framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - a safetensors handle, not a dict
    except FileNotFoundError:
        raise XconvError(f"no such checkpoint: {target}") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for bad files
        raise XconvError(f"{target} is not a readable .safetensors file ({e})") from None
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise XconvError(f"{target} is a .safetensors file but not an xconv checkpoint (no xconv metadata)")
    version = metadata.get("format_version")
    if version not in READABLE_VERSIONS:
        raise XconvError(
            f"{target}: checkpoint format version {version!r}; this xconv reads versions "
            f"{' and '.join(READABLE_VERSIONS)} (a newer xconv wrote it, or the file is corrupted)"
        )
    text = metadata.get("spec", "")
    if len(text) > MAX_SPEC_CHARS or _json_depth(text) > MAX_SPEC_DEPTH:
        raise XconvError(
            f"{target}: the spec in the checkpoint is larger or deeper than an xconv spec can be "
            f"({len(text)} characters; at most {MAX_SPEC_CHARS} and {MAX_SPEC_DEPTH} levels)"
        )
    expected = metadata.get("sha256")
    if version == "1":  # the digest, if any, covers the tensors only
        if expected is not None and digest(tensors) != expected:
            raise XconvError(
                f"{target}: the tensor data does not match the digest stored with it: the file is corrupted"
            )
    elif expected is None:
        raise XconvError(
            f"{target}: the digest is missing from the header (every format {version} file has one): the file "
            "is corrupted or was edited"
        )
    elif digest(tensors, metadata) != expected:
        raise XconvError(
            f"{target}: the file (its tensors, or its header: spec, format, tensor names, dtypes and shapes) does "
            "not match the digest stored with it: the file is corrupted or was edited"
        )
    try:
        spec = from_dict(json.loads(text))
        infos = shapes.infer(spec)
    except (ValueError, TypeError, RecursionError) as e:
        raise XconvError(f"{target}: the spec in the checkpoint is invalid: {e}") from None
    try:
        weights = check_weights(infos, tensors, dtype_name or single_dtype(tensors, fix))
    except XconvError as e:
        raise type(e)(f"{target}: {e}") from None
    return spec, weights


def has_digest(path: str | os.PathLike[str]) -> bool:
    """Whether a checkpoint carries a SHA-256 digest (format 1 files written by other tools may not; they load,
    unchecked). See :func:`format_version` for what it covers."""
    with _safetensors().safe_open(os.fspath(path), framework="numpy") as f:
        return "sha256" in (f.metadata() or {})


def format_version(path: str | os.PathLike[str]) -> str | None:
    """The checkpoint format version a file says it has: ``"2"`` (its digest covers header and tensors),
    ``"1"`` (the tensors only), None for no xconv metadata."""
    with _safetensors().safe_open(os.fspath(path), framework="numpy") as f:
        return (f.metadata() or {}).get("format_version")


def load_model(path: str | os.PathLike[str], backend: str, *, dtype: Any = None) -> Any:
    """Build a native model for ``backend`` from a checkpoint and fill in its weights (``dtype`` defaults to
    the checkpoint's; see :func:`load`).

    >>> import os, tempfile, xconv as xc
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> xc.save(path, xc.build(xc.Sequential(xc.Conv2d(3, 8, 3), input_shape=(3, 8, 8)), "numpy", seed=0))
    >>> type(xc.load_model(path, backend="numpy")).__name__
    'NumpyModel'
    """
    from ._api import build, set_weights

    spec, weights = load(path, dtype=dtype)
    model = build(spec, backend, dtype=weights_dtype(weights) if dtype is None else dtype)
    set_weights(model, weights)
    return model
