"""Transformers at model scale: torchvision's ``vit_b_16`` (3x224x224) and Hugging Face's BERT-base (token ids,
sequence 128), batch 8 by default, random weights with every parameter drawn, ported to Keras and back to
torch. Prints the port time (import, build, weights, verification), the max relative difference of each ported
model against the original (max |a - b| / max(1, max |a|), float32, and float64 with ``--float64``), and the
run-time ratios, each a median over interleaved pairs:

- torch eager: the model built back in torch (``F.scaled_dot_product_attention``) / the original (eval,
  no_grad); the target is <= 1.02;
- Keras: the ported model's call inside ``tf.function`` / the original torch model, a cross-framework figure
  (what a user moving the model pays or gains), not a target.

    .venv/bin/python benchmarks/transformer_models.py [--batch 8] [--repeats 5] [--float64] [--only vit_b_16|bert_base]

Writes benchmarks/results/transformer_models.json (with ``--only``, that model's entry).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _timing import paired, write

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import xconv as xc
from tests.zoo_support import import_torchvision
from xconv.testing import max_rel_diff

SEQUENCE = 128


def _models() -> dict[str, tuple[Callable[[], Any], dict[str, Any]]]:
    """name -> (the model, made with every parameter drawn; port's keywords for it)."""
    import torch
    import torchvision
    import transformers

    def drawn(model: Any) -> Any:
        torch.manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.02)
        return model.eval()

    return {
        "vit_b_16": (lambda: drawn(torchvision.models.vit_b_16(weights=None)), {"input_shape": (3, 224, 224)}),
        "bert_base": (
            lambda: drawn(transformers.BertModel(transformers.BertConfig(), add_pooling_layer=False)),
            {"input_shape": (SEQUENCE,), "input_dtype": "int64", "output": "last_hidden_state"},
        ),
    }


def _batch(name: str, n: int, dtype: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    if name == "bert_base":
        return rng.integers(0, 30522, (n, SEQUENCE))
    return rng.standard_normal((n, 3, 224, 224)).astype(dtype)


def _run(model: Any, x: Any, output: str | None) -> Any:
    y = model(x)
    return y[output] if output is not None else y


def _ratios(model: Any, back: Any, keras_model: Any, x: np.ndarray, output: str | None, repeats: int) -> Any:
    """(torch built back / original, its times, Keras tf.function / torch original, its time)."""
    import tensorflow as tf
    import torch

    xt = torch.from_numpy(x)
    xk = tf.constant(xc.to_nhwc(x) if x.ndim == 4 else x)
    call = tf.function(lambda v: keras_model(v, training=False))

    def original() -> None:
        with torch.no_grad():
            _run(model, xt, output)

    def rebuilt() -> None:
        with torch.no_grad():
            back(xt)

    torch_ratio, t_back, t_orig = paired(rebuilt, original, repeats)
    keras_ratio, t_keras, _ = paired(lambda: call(xk).numpy(), original, repeats)
    return torch_ratio, t_back, t_orig, keras_ratio, t_keras


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--float64", action="store_true")
    parser.add_argument("--only", choices=["vit_b_16", "bert_base"])
    args = parser.parse_args()
    import_torchvision()
    import torch

    results = {}
    for name, (make, keywords) in _models().items():
        if args.only not in (None, name):
            continue
        model = make()
        output = keywords.get("output")
        rows = {}
        for dtype in ("float32", "float64") if args.float64 else ("float32",):
            source = model.to(getattr(torch, dtype))
            t = time.perf_counter()
            keras_model = xc.port(source, to="keras", **keywords)
            port_s = time.perf_counter() - t
            back = xc.port(keras_model, to="torch")
            x = _batch(name, args.batch, dtype)
            with torch.no_grad():
                want = _run(source, torch.from_numpy(x), output).numpy()
            rows[dtype] = {
                "port_s": port_s,
                "keras_diff": max_rel_diff(want, xc.predict(keras_model, x)),
                "torch_diff": max_rel_diff(want, xc.predict(back, x)),
            }
            print(
                f"{name} {dtype}: port to Keras {port_s:.1f} s; max rel. diff Keras {rows[dtype]['keras_diff']:.2g}, "
                f"torch built back {rows[dtype]['torch_diff']:.2g}"
            )
            del keras_model, back
        model = model.float()
        keras_model = xc.port(model, to="keras", **keywords)
        back = xc.port(keras_model, to="torch")
        x = _batch(name, args.batch, "float32")
        torch_ratio, t_back, t_orig, keras_ratio, t_keras = _ratios(model, back, keras_model, x, output, args.repeats)
        print(
            f"{name} run time, batch {args.batch}: torch built back / original {torch_ratio:.3f} ({t_back:.2f} s "
            f"vs {t_orig:.2f} s; target <= 1.02); Keras tf.function / torch original {keras_ratio:.3f} "
            f"({t_keras:.2f} s)"
        )
        results[name] = {"ports": rows, "torch_ratio": torch_ratio, "keras_ratio": keras_ratio}
        del model, keras_model, back
    previous = pathlib.Path(__file__).parent / "results" / "transformer_models.json"
    if args.only is not None and previous.exists():  # one model measured again: the others' entries stay
        import json

        results = {**json.loads(previous.read_text()).get("models", {}), **results}
    path = write("transformer_models", {"batch": args.batch, "models": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
