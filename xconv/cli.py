"""The ``xconv`` command line: summary, convert, check. Frameworks are imported only when a command needs one.

    xconv summary FILE
    xconv convert IN --to torch|tf|safetensors -o OUT [--spec spec.json] [--input-shape C,H,W]
    xconv check FILE [--dtype float32|float64] [--batch N]
    xconv demo [--data DIR] [--steps N] [--out DIR] ...   (see xconv.demo)

Errors go to stderr as one line (``--debug`` shows the traceback); exit code 2 for bad usage or input,
1 when ``check`` finds the frameworks differ beyond tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

import numpy as np

from . import layout as xc_layout
from . import shapes
from .errors import XconvError
from .spec import Sequential, from_dict


class _UsageError(Exception):
    pass


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise _UsageError(f"--input-shape must look like C,H,W (e.g. 3,32,32). Received: {text!r}") from None


def _read_spec_json(path: str) -> Sequential:
    try:
        with open(path) as f:
            return from_dict(json.load(f))
    except OSError as e:
        raise _UsageError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise _UsageError(f"{path} is not JSON: {e}") from None


def _read(path: str, spec_path: str | None = None, input_shape: tuple[int, ...] | None = None) -> tuple[Sequential, dict[str, np.ndarray] | None]:
    """(spec, weights or None) from a spec JSON, an xconv checkpoint, a .keras file or a torch state_dict."""
    from .weights import check_weights, weights_dtype

    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise _UsageError(f"no such file: {path}")
    if ext == ".json":
        spec, weights = _read_spec_json(path), None
    elif ext == ".safetensors":
        from .checkpoint import load

        spec, weights = load(path)
    elif ext == ".keras":
        from ._porting import from_keras
        from .backends import get_backend

        spec, weights = from_keras(get_backend("tf").read_keras_file(path), return_weights=True)
    elif ext in (".pt", ".pth"):
        if spec_path is None:
            raise _UsageError(f"{path}: a torch state_dict needs --spec spec.json (it holds no architecture)")
        from .backends import get_backend

        reader = get_backend("torch").read_state_dict
        try:
            state = reader(path)  # torch.load(weights_only=True): never unpickles code
        except Exception as e:  # noqa: BLE001 - any unreadable file is bad input
            raise _UsageError(f"{path} is not a readable torch state_dict ({type(e).__name__}: {e})") from None
        spec = _read_spec_json(spec_path).with_input_shape(input_shape)
        infos = shapes.infer(spec)
        weights = check_weights(infos, state, weights_dtype(state))
        return spec, weights
    else:
        raise _UsageError(f"{path}: unknown file type {ext!r}; expected .json, .safetensors, .keras, .pt or .pth")
    if spec_path is not None:
        raise _UsageError("--spec is only for torch state_dict (.pt/.pth) inputs")
    return spec.with_input_shape(input_shape), weights


def _summary(args: argparse.Namespace) -> int:
    from ._api import summary

    spec, _ = _read(args.file, input_shape=_parse_shape(args.input_shape))
    summary(spec)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from ._api import build, set_weights
    from .weights import weights_dtype

    spec, weights = _read(args.input, args.spec, _parse_shape(args.input_shape))
    spec, _ = shapes.resolve(spec)
    if weights is None:
        raise _UsageError(f"{args.input} holds a spec without weights; convert needs weights")
    if os.path.splitext(args.input)[1].lower() == ".keras":  # the file's own model must be what was imported
        from ._compare import TOLERANCE

        x = np.random.default_rng(0).standard_normal((2, *spec.input_shape))  # type: ignore[misc]
        err = _keras_file_error(args.input, spec, weights, x)
        tol = TOLERANCE[weights_dtype(weights)]
        if not err <= tol:
            raise _UsageError(f"{args.input}: the stored model does not compute what its layers' configurations say "
                              f"({err:.3g} relative, tolerance {tol:g}); refusing to convert an edited file")
    to = args.to
    if to == "safetensors":
        from .checkpoint import save

        save(args.output, spec, weights)
    elif to == "torch":
        from .backends import get_backend

        model = build(spec, "torch", dtype=weights_dtype(weights))
        set_weights(model, weights)
        get_backend("torch").write_state_dict(model, args.output)
    else:
        model = build(spec, "tf", dtype=weights_dtype(weights))
        set_weights(model, weights)
        model.save(args.output)
    print(f"wrote {args.output} ({to}, {len(weights)} tensors)")
    return 0


def _keras_file_error(path: str, spec: Any, weights: Any, x: np.ndarray) -> float:
    """How far the model stored in a ``.keras`` file (run as loaded, in its own dtype) is from the numpy
    reference of the spec and weights imported from it: max |a - b| / max(1, max |a|). A file whose layer
    configs were edited imports to the nominal spec but computes something else; this sees it."""
    from ._api import build, set_weights
    from .backends import get_backend

    tf_backend = get_backend("tf")
    model = tf_backend.read_keras_file(path)
    reference = build(spec, "numpy")
    set_weights(reference, weights)
    expect = reference(x.astype("float64"))
    dtype = str(model.inputs[0].dtype)
    y = np.asarray(model(xc_layout.to_nhwc(x.astype(dtype)) if x.ndim == 4 else x.astype(dtype), training=False))
    got = xc_layout.to_nchw(y) if y.ndim == 4 else xc_layout.features_to_chw_order(y, shapes.infer(spec)[-1].output_source)
    from ._compare import max_rel_diff

    return max_rel_diff(expect, got)


def _check(args: argparse.Namespace) -> int:
    from ._compare import TOLERANCE
    from .testing._equivalence import compare_layerwise, format_table

    spec, weights = _read(args.file, input_shape=_parse_shape(args.input_shape))
    spec, _ = shapes.resolve(spec)
    if args.batch < 1:
        raise _UsageError(f"--batch must be positive. Received: {args.batch}")
    x = np.random.default_rng(args.seed).standard_normal((args.batch, *spec.input_shape))  # type: ignore[misc]
    rows = compare_layerwise(spec, weights, x, backends=("torch", "tf"), dtype=args.dtype, grads=False)
    print(format_table(rows, "torch"))
    bad = [r for r in rows if not r.ok]
    if bad:
        print(f"FAIL: {len(bad)} layer(s) beyond tolerance, first: layer {bad[0].key or bad[0].layer} ({bad[0].kind})")
        return 1
    if os.path.splitext(args.file)[1].lower() == ".keras":
        err = _keras_file_error(args.file, spec, weights, x)
        file_dtype = "float64" if all(w.dtype == np.float64 for w in weights.values() if w.dtype.kind == "f") else "float32"
        print(f"the model in {args.file} itself against the numpy reference: {err:.3e} relative")
        if not err <= TOLERANCE[file_dtype]:
            print(f"FAIL: the model stored in {args.file} does not compute what its layers' configurations say "
                  f"({err:.3g} relative, tolerance {TOLERANCE[file_dtype]:g}); was the file edited?")
            return 1
    print(f"OK: torch and tf agree on every layer ({args.dtype}, batch {args.batch})")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xconv", description="One network spec, native PyTorch and Keras models.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summary", help="layer table of a spec JSON, xconv checkpoint or .keras file")
    s.add_argument("file")
    s.add_argument("--input-shape", help="C,H,W when the file has none")
    s.set_defaults(run=_summary)
    c = sub.add_parser("convert", help="convert between xconv .safetensors, .keras and torch .pt")
    c.add_argument("input")
    c.add_argument("--to", required=True, choices=("torch", "tf", "safetensors"))
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--spec", help="spec JSON, needed for a torch state_dict input")
    c.add_argument("--input-shape", help="C,H,W")
    c.set_defaults(run=_convert)
    k = sub.add_parser("check", help="build both frameworks with the file's weights and compare every layer")
    k.add_argument("file")
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
    try:
        return int(args.run(args))
    except (_UsageError, XconvError, ImportError, demo.DataError) as e:
        if args.debug:
            raise
        print(f"xconv {args.command}: error: {e}".replace("\n", " "), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
