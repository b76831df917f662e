"""The ``xconv`` command line: summary, convert, check. Frameworks are imported only when a command needs one.

    xconv summary FILE [--spec spec.json] [--input-shape C,H,W]
    xconv convert IN --to torch|tf|safetensors -o OUT [--spec spec.json] [--input-shape C,H,W] [--dtype D]
    xconv check FILE [--spec spec.json] [--dtype float32|float64] [--batch N] [--seed N]
    xconv demo [--data DIR] [--steps N] [--out DIR] ...   (see xconv.demo)

Errors go to stderr as one line (``--debug`` shows the traceback); exit code 2 for bad usage or input,
1 when ``check`` finds the frameworks differ beyond tolerance. Only regular files are read, and ``convert``
writes its output to a temporary file in the output's folder renamed into place, so a failed conversion
leaves no half-written file and keeps the old one; an output that is a broken or looping symbolic link is
refused (``cp`` does the same), and so is a ``.keras`` name not in lower case (Keras reads no other).
``convert`` keeps the input's dtype; an input mixing float32 and float64 tensors is refused, naming them,
unless ``--dtype`` chooses (float64 keeps every value). A ``.keras`` model with a mixed precision dtype policy
is refused by ``convert`` and ``check``: xconv models are float32 or float64.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import shapes
from .errors import XconvError
from .spec import Sequential, from_dict


class _UsageError(Exception):
    pass


#: the most numbers a random input batch of ``check`` (or of the check of a ``.keras`` input) may hold
MAX_INPUT_ELEMENTS = 2**28

#: the file extensions each ``convert --to`` target writes
OUTPUT_EXTENSIONS = {"torch": (".pt", ".pth"), "tf": (".keras",), "safetensors": (".safetensors",)}

INPUT_EXTENSIONS = (".json", ".safetensors", ".keras", ".pt", ".pth")

#: how a ``convert`` whose input mixes float32 and float64 tensors chooses its dtype (see ``_read``)
MIXED_DTYPE_FIX = "pass --dtype float64 (keeps every value) or --dtype float32 (rounds the float64 ones)"


def _input_file(path: str) -> None:
    """Refuse a path that is not an existing regular file: a FIFO or a device would be read forever."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise _UsageError(f"no such file: {path}") from None
    except OSError as e:
        raise _UsageError(f"cannot read {path}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise _UsageError(f"{path} is not a regular file")


def _check_input(path: str, spec_path: str | None) -> None:
    """What can be said about an input before reading it: it and its --spec are regular files of a known type."""
    _input_file(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in INPUT_EXTENSIONS:
        raise _UsageError(f"{path}: unknown file type {ext!r}; expected .json, .safetensors, .keras, .pt or .pth")
    if ext == ".keras" and not path.endswith(".keras"):
        raise _UsageError(
            f"{path}: Keras reads only files whose name ends in lower-case .keras; rename it to "
            f"{os.path.splitext(path)[0]}.keras"
        )
    if ext in (".pt", ".pth"):
        if spec_path is None:
            raise _UsageError(f"{path}: a torch state_dict needs --spec spec.json (it holds no architecture)")
        _input_file(spec_path)
    elif spec_path is not None:
        raise _UsageError("--spec is only for torch state_dict (.pt/.pth) inputs")


def _check_output(output: str, to: str, inputs: Sequence[str | None]) -> str:
    """The real path to write ``output`` to, after refusing an extension that ``to`` does not write, one of
    the ``inputs`` itself, something other than a regular file, and a folder that is missing or unwritable."""
    ext = os.path.splitext(output)[1].lower()
    allowed = OUTPUT_EXTENSIONS[to]
    if ext not in allowed:
        found = f"ends in {ext!r}" if ext else "has no extension"
        raise _UsageError(f"--to {to} writes {' or '.join(allowed)} files; the output {output} {found}")
    if to == "tf" and not output.endswith(".keras"):
        raise _UsageError(
            f"-o {output}: Keras writes and reads only files whose name ends in lower-case .keras; use -o "
            f"{os.path.splitext(output)[0]}.keras"
        )
    if os.path.islink(output) and not os.path.exists(output):  # writing through it would create its target
        try:
            os.path.realpath(output, strict=True)
        except FileNotFoundError:
            raise _UsageError(
                f"-o {output} is a broken symbolic link (to {os.readlink(output)}, which does not exist); remove "
                "the link or give -o another path"
            ) from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise _UsageError(
                    f"-o {output} is a symbolic link that loops back on itself; remove the link or give -o another path"
                ) from None
    target = os.path.realpath(output)
    exists = os.path.exists(target)
    for path in inputs:
        if path is not None and (os.path.samefile(path, target) if exists else os.path.realpath(path) == target):
            raise _UsageError(f"the output {output} is the input file {path}; write to another file")
    if exists and not os.path.isfile(target):
        raise _UsageError(f"cannot write {output}: it exists and is not a regular file")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise _UsageError(f"cannot write {output}: its folder {os.path.dirname(output) or '.'} {what}")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise _UsageError(f"cannot write {output}: its folder is not writable ({e.strerror})") from None
    return target


def _write_atomically(target: str, output: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` to a temporary file in ``target``'s folder, with ``target``'s extension, then rename it
    into place: an existing ``target`` keeps its content until the new one is complete, and its permissions."""
    folder, name = os.path.split(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".xconv-tmp-", suffix=os.path.splitext(name)[1], dir=folder)
    except OSError as e:
        raise _UsageError(f"cannot write {output}: {e.strerror or e}") from None
    os.close(fd)
    try:
        write(tmp)
        if os.path.exists(target):
            mode = stat.S_IMODE(os.stat(target).st_mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        _unlink_quietly(tmp)
        raise _UsageError(f"cannot write {output}: {e.strerror or e}") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _random_input(seed: int, batch: int, spec: Sequential) -> np.ndarray:
    shape = (batch, *spec.input_shape)  # type: ignore[misc]
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise _UsageError(
            f"an input batch of shape {shape} is too large (more than {MAX_INPUT_ELEMENTS:,} numbers); "
            "use a smaller --batch or --input-shape"
        )
    from .graph import token_vocabulary
    from .shapes import infer

    vocabulary = token_vocabulary(infer(spec))
    if vocabulary is not None:  # a model that takes token ids
        return np.random.default_rng(seed).integers(0, vocabulary, shape)
    return np.random.default_rng(seed).standard_normal(shape)


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise _UsageError(f"--input-shape must look like C,H,W (e.g. 3,32,32). Received: {text!r}") from None


def _read_spec_json(path: str) -> Sequential:
    _input_file(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise _UsageError(f"cannot read {path}: {e.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _UsageError(f"{path} is not UTF-8 text, so not a spec JSON") from None
    except json.JSONDecodeError as e:
        raise _UsageError(f"{path} is not JSON: {e}") from None
    except RecursionError:
        raise _UsageError(f"{path} is not a spec: its JSON is nested too deeply") from None
    try:
        return from_dict(data)
    except XconvError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        raise _UsageError(f"{path} is not a valid spec ({type(e).__name__}: {e})") from None


def _read_keras(path: str) -> Any:
    from .backends import get_backend

    backend = get_backend("tf")
    try:
        return backend.read_keras_file(path)
    except Exception as e:  # noqa: BLE001 - keras raises many types for a bad file; any is bad input
        raise _UsageError(f"{path} is not a readable .keras file ({type(e).__name__}: {e})") from None


def _read(
    path: str,
    spec_path: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    dtype: str | None = None,
    run_keras: bool = True,
) -> tuple[Sequential, dict[str, np.ndarray] | None]:
    """(spec, weights or None) from a spec JSON, an xconv checkpoint, a .keras file or a torch state_dict. The
    weights are cast to ``dtype``; without it they keep the file's, and a file mixing float64 with other float
    tensors is refused, naming them (``MIXED_DTYPE_FIX`` says how to choose). With ``run_keras``, a .keras model
    that xconv could not run as it is stored (a mixed precision policy) is refused."""
    from .weights import check_weights, single_dtype

    _check_input(path, spec_path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        spec, weights = _read_spec_json(path), None
    elif ext == ".safetensors":
        from .checkpoint import _load

        spec, weights = _load(path, dtype, MIXED_DTYPE_FIX)
    elif ext == ".keras":
        from ._port import from_keras

        model = _read_keras(path)
        if run_keras:
            _refuse_mixed_precision(path, model)
        spec, weights = from_keras(model, return_weights=True)
        try:
            chosen = dtype or single_dtype(weights, MIXED_DTYPE_FIX)
        except XconvError as e:
            raise _UsageError(f"{path}: {e}") from None
        weights = {k: v.astype(chosen, copy=False) if v.dtype.kind == "f" else v for k, v in weights.items()}
    else:
        from .backends import get_backend

        reader = get_backend("torch").read_state_dict
        try:
            state = reader(path)  # torch.load(weights_only=True): never unpickles code
        except Exception as e:  # noqa: BLE001 - any unreadable file is bad input
            raise _UsageError(f"{path} is not a readable torch state_dict ({type(e).__name__}: {e})") from None
        assert spec_path is not None  # _check_input refuses a state_dict without --spec
        spec = _read_spec_json(spec_path).with_input_shape(input_shape)
        infos = shapes.infer(spec)
        try:
            weights = check_weights(infos, state, dtype or single_dtype(state, MIXED_DTYPE_FIX))
        except XconvError as e:
            raise _UsageError(f"{path}: {e}") from None
        return spec, weights
    return spec.with_input_shape(input_shape), weights


def _refuse_mixed_precision(path: str, model: Any) -> None:
    """A .keras model computing in another dtype than it stores (``mixed_float16``) or in float16 is refused:
    xconv's models (and the check that the file computes what its configuration says) are float32 or float64."""
    queue = [model]
    while queue:
        layer = queue.pop(0)  # (the first layer that has one is named)
        policy = getattr(layer, "dtype_policy", None)
        compute, variable = getattr(policy, "compute_dtype", None), getattr(policy, "variable_dtype", None)
        if compute is not None and (compute != variable or compute not in ("float32", "float64")):
            raise _UsageError(
                f"{path}: layer {layer.name!r} uses the {getattr(policy, 'name', compute)!r} dtype policy (computes "
                f"in {compute}), and xconv models are float32 or float64, so mixed precision is not supported: "
                "build the model again after keras.config.set_dtype_policy('float32'), copy the weights into it "
                "(new.set_weights(model.get_weights())) and save that"
            )
        queue.extend(getattr(layer, "layers", []))  # a nested model's own layers


def _summary(args: argparse.Namespace) -> int:
    from ._api import summary

    # (the weights only need reading: float64 keeps a mixed file's values, and a .keras file is not run)
    spec, _ = _read(args.file, args.spec, _parse_shape(args.input_shape), dtype="float64", run_keras=False)
    summary(spec)
    if os.path.splitext(args.file)[1].lower() == ".safetensors":
        from .checkpoint import format_version, has_digest

        if not has_digest(args.file):
            print(
                "note: this checkpoint has no digest of its tensors (written by another tool): its data was "
                "loaded unchecked"
            )
        elif format_version(args.file) == "1":
            print(
                "note: this checkpoint is in format 1 (an older xconv): its digest covers the tensors, not the "
                "spec; `xconv convert FILE --to safetensors -o NEW.safetensors` writes it in format 2, which "
                "covers both"
            )
    return 0


def _convert(args: argparse.Namespace) -> int:
    from ._api import build, set_weights
    from .weights import weights_dtype

    input_shape = _parse_shape(args.input_shape)
    _check_input(args.input, args.spec)
    target = _check_output(args.output, args.to, (args.input, args.spec))
    spec, weights = _read(args.input, args.spec, input_shape, args.dtype)
    spec, _ = shapes.resolve(spec)
    if weights is None:
        raise _UsageError(f"{args.input} holds a spec without weights; convert needs weights")
    dtype = args.dtype or weights_dtype(weights)
    if os.path.splitext(args.input)[1].lower() == ".keras":  # the file's own model must be what was imported
        from ._compare import TOLERANCE

        x = _random_input(0, 2, spec)
        err, file_dtype = _keras_file_error(args.input, spec, weights, x)
        tol = TOLERANCE[file_dtype]
        if not err <= tol:
            raise _UsageError(
                f"{args.input}: the stored model does not compute what its layers' configurations say "
                f"({err:.3g} relative, tolerance {tol:g}); refusing to convert an edited file"
            )
    to = args.to
    if to == "safetensors":
        from .checkpoint import save

        _write_atomically(target, args.output, lambda tmp: save(tmp, spec, weights))
    elif to == "torch":
        from .backends import get_backend

        model = build(spec, "torch", dtype=dtype)
        set_weights(model, weights)
        writer = get_backend("torch").write_state_dict
        _write_atomically(target, args.output, lambda tmp: writer(model, tmp))
    else:
        model = build(spec, "tf", dtype=dtype)
        set_weights(model, weights)
        _write_atomically(target, args.output, model.save)
    print(f"wrote {args.output} ({to}, {dtype}, {len(weights)} tensors)")
    return 0


def _keras_file_error(path: str, spec: Any, weights: Any, x: np.ndarray) -> tuple[float, str]:
    """How far the model stored in a ``.keras`` file (run as loaded, in its own dtype) is from the numpy
    reference of the spec and weights imported from it: max |a - b| / max(1, max |a|), and that dtype. A file
    whose layer configs were edited imports to the nominal spec but computes something else; this sees it."""
    from ._api import build, set_weights

    model = _read_keras(path)
    reference = build(spec, "numpy")
    set_weights(reference, weights)
    ids = x.dtype.kind in "iu"  # token ids stay integers
    expect = reference(x if ids else x.astype("float64"))
    dtype = str(model.outputs[0].dtype if ids else model.inputs[0].dtype)
    if not ids:
        x = x.astype(dtype)
    from .backends.tf.run import _inputs, _numpy

    # (no padding mask, every token of type 0; maps to NCHW, a flat output in the spec's own order, several
    # outputs as the list of them)
    got = _numpy(model(_inputs(model, x, {}), training=False))
    from ._compare import max_rel_diff

    return max_rel_diff(expect, got), dtype


def _check(args: argparse.Namespace) -> int:
    from ._compare import TOLERANCE
    from .testing._equivalence import compare_layerwise, format_table

    if args.batch < 1:
        raise _UsageError(f"--batch must be positive. Received: {args.batch}")
    if args.seed < 0:
        raise _UsageError(f"--seed must not be negative. Received: {args.seed}")
    # (float64 keeps every value of the file, also a mixed one: the models built from the weights cast them)
    spec, weights = _read(args.file, args.spec, _parse_shape(args.input_shape), "float64")
    spec, _ = shapes.resolve(spec)
    x = _random_input(args.seed, args.batch, spec)
    rows = compare_layerwise(spec, weights, x, backends=("torch", "tf"), dtype=args.dtype, grads=False)
    print(format_table(rows, "torch"))
    bad = [r for r in rows if not r.ok]
    if bad:
        print(f"FAIL: {len(bad)} layer(s) beyond tolerance, first: layer {bad[0].key or bad[0].layer} ({bad[0].kind})")
        return 1
    if os.path.splitext(args.file)[1].lower() == ".keras":
        assert weights is not None  # a .keras file carries its weights
        err, file_dtype = _keras_file_error(args.file, spec, weights, x)
        print(f"the model in {args.file} itself against the numpy reference: {err:.3e} relative")
        if not err <= TOLERANCE[file_dtype]:
            print(
                f"FAIL: the model stored in {args.file} does not compute what its layers' configurations say "
                f"({err:.3g} relative, tolerance {TOLERANCE[file_dtype]:g}); was the file edited?"
            )
            return 1
    print(f"OK: torch and tf agree on every layer ({args.dtype}, batch {args.batch})")
    return 0


def _version() -> str:
    from . import __version__

    return __version__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xconv", description="One network spec, native PyTorch and Keras models.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--verbose", action="store_true", help="show TensorFlow's native start-up log lines")
    p.add_argument("--version", action="version", version=f"xconv {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summary", help="layer table of a spec JSON, xconv checkpoint or .keras file")
    s.add_argument("file")
    s.add_argument("--spec", help="spec JSON, needed for a torch state_dict input")
    s.add_argument("--input-shape", help="C,H,W when the file has none")
    s.set_defaults(run=_summary)
    c = sub.add_parser("convert", help="convert between xconv .safetensors, .keras and torch .pt")
    c.add_argument("input")
    c.add_argument("--to", required=True, choices=("torch", "tf", "safetensors"))
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--spec", help="spec JSON, needed for a torch state_dict input")
    c.add_argument("--input-shape", help="C,H,W")
    c.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        help="the output's dtype (default: the input's; an input mixing float32 and float64 tensors is refused, "
        "naming them, unless --dtype says which: float64 keeps every value, float32 rounds the float64 ones)",
    )
    c.set_defaults(run=_convert)
    k = sub.add_parser("check", help="build both frameworks with the file's weights and compare every layer")
    k.add_argument("file")
    k.add_argument("--spec", help="spec JSON, needed for a torch state_dict input")
    k.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    k.add_argument("--batch", type=int, default=8)
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--input-shape", help="C,H,W when the file has none")
    k.set_defaults(run=_check)
    from . import demo

    d = sub.add_parser("demo", help="the seed's ConvNet trained in PyTorch, ported to Keras and trained again there")
    demo.add_arguments(d)
    d.set_defaults(run=demo.run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from . import demo

    parser = _parser()
    args = parser.parse_args(argv)
    if not args.verbose and argv is None:  # the program itself (not a call from Python code)
        from ._quiet import filter_native_stderr

        filter_native_stderr()
    try:
        return int(args.run(args))
    except (_UsageError, XconvError, ImportError, demo.DataError) as e:
        if args.debug:
            raise
        print(f"xconv {args.command}: error: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"xconv {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(
            f"xconv {args.command}: error: {type(e).__name__}: {e} (unexpected; --debug shows the traceback)".replace(
                "\n", " "
            ),
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
