"""Training parity: the same spec, initial weights and batches trained with each framework's native optimizer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import shapes
from .._api import build, get_weights, set_weights
from ..backends import get_backend
from ..errors import SpecError
from ..graph import model_outputs, returns_list, side_inputs, token_type_count, token_vocabulary
from ..spec import Sequential
from ..weights import init_weights

__all__ = ["TrainParity", "train_parity"]


@dataclass
class TrainParity:
    """What :func:`train_parity` measured."""

    torch_losses: np.ndarray
    tf_losses: np.ndarray
    #: over all final parameters in canonical layout, the largest per-tensor max |a - b| / max |a|
    max_param_diff: float
    #: the same, per canonical key
    param_diffs: dict[str, float]
    #: the weights both frameworks started from (canonical layout)
    initial_weights: dict[str, np.ndarray] = field(default_factory=dict)
    #: each framework's final weights (canonical layout), by backend name: "torch" and "tf"
    final_weights: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def max_loss_diff(self) -> float:
        return float(np.abs(self.torch_losses - self.tf_losses).max())


def train_parity(
    spec: Sequential,
    steps: int = 20,
    lr: float = 1e-2,
    momentum: float = 0.9,
    nesterov: bool = True,
    batch: int = 16,
    seed: int = 0,
    dtype: str = "float64",
    optimizer: str = "sgd",
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> TrainParity:
    """Train ``spec`` from the same initial weights (xconv's init from ``seed``) on the same ``steps`` batches
    of ``batch`` standard-normal inputs with random integer labels (all drawn from ``seed``) with
    ``torch.optim.SGD`` and ``keras.optimizers.SGD`` (the seed notebook's settings by default: lr 1e-2,
    momentum 0.9, Nesterov), or with Adam (``optimizer="adam"``), and mean cross-entropy on the logits. The
    spec's output must be flat (N, classes). A text encoder gets random token ids, and random padding masks
    and token types where it takes them.

    Adam: torch adds ``eps`` to sqrt(v_hat) while Keras adds it to sqrt(v) with the bias correction folded
    into the step size, so Keras' epsilon equals torch's eps * sqrt(1 - beta_2**t) at step t. Left at one
    constant, the two differ wherever gradients are small (measured 2.8e-3 relative after 20 float64 steps on
    the seed ConvNet); xconv sets the Keras optimizer's epsilon to that value before each step, which makes
    the native Keras Adam follow torch's rule.

    Models train in training mode (torch ``train()``, Keras ``training=True``), so BatchNorm uses batch
    statistics and updates its running statistics; those buffers are compared with the parameters. Specs
    with Dropout(p > 0) are refused: the masks cannot match.

    >>> import xconv as xc
    >>> from xconv.testing import train_parity
    >>> spec = xc.Sequential(xc.Conv2d(1, 4, 3), xc.ReLU(), xc.Flatten(), xc.Linear(None, 3), input_shape=(1, 6, 6))
    >>> result = train_parity(spec, steps=3, batch=4)
    >>> result.max_param_diff < 1e-12
    True
    """
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam'. Received: optimizer={optimizer!r}")
    resolved, infos = shapes.resolve(spec)
    drop = [i for i in infos if i.kind in ("Dropout", "StochasticDepth") and i.layer.p > 0]  # type: ignore[attr-defined]
    if drop:
        raise ValueError(
            f"train_parity: layer {drop[0].key} is {drop[0].layer!r}; dropout masks differ between frameworks, "
            "so trajectories cannot be compared (use Dropout(0) to keep the layer)"
        )
    if returns_list(infos):
        raise SpecError(
            f"train_parity trains a classifier on one output with cross-entropy; this spec returns "
            f"{len(model_outputs(infos))} (outputs={list(resolved.outputs or ())})"
        )
    out = infos[-1].output_shape
    if len(out) != 1:
        raise SpecError(f"train_parity needs a spec whose output is flat (classes,); this one ends in {out}")
    rng = np.random.default_rng(seed)
    weights = init_weights(infos, seed, dtype)
    shape = (steps, batch, *(resolved.input_shape or ()))
    vocabulary = token_vocabulary(infos)
    if vocabulary is None:
        xs = rng.standard_normal(shape).astype(dtype)
    else:  # token ids, the padding id among them where there is one
        xs = rng.integers(0, vocabulary, shape)
    ys = rng.integers(0, out[0], size=(steps, batch)).astype(np.int64)
    sides = [_side_inputs(infos, x, rng) for x in xs] if vocabulary is not None else None
    config = {"name": optimizer, "lr": lr, "momentum": momentum, "nesterov": nesterov, "betas": betas, "eps": eps}
    losses, finals = {}, {}
    for name in ("torch", "tf"):
        model = build(resolved, name, dtype=dtype)
        set_weights(model, weights)
        steps_of = zip(xs, ys) if sides is None else zip(xs, ys, sides)
        losses[name] = get_backend(name).train(model, steps_of, config)
        finals[name] = get_weights(model)
    diffs = {}
    for key, a in finals["torch"].items():
        b = finals["tf"][key]
        scale = float(np.abs(a).max())
        diffs[key] = float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(b).max())
    worst = max(diffs.values()) if diffs else 0.0
    return TrainParity(losses["torch"], losses["tf"], worst, diffs, weights, finals)


def _side_inputs(infos: Any, ids: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A text encoder's random padding mask (a token in every row) and token types for the ids ``ids``, where
    it takes them."""
    taken = side_inputs(infos)
    side = {}
    if "padding_mask" in taken:
        mask = (rng.random(ids.shape) < 0.7).astype(np.int64)
        mask[:, 0] = 1
        side["padding_mask"] = mask
    if "token_types" in taken:
        side["token_types"] = rng.integers(0, token_type_count(infos), ids.shape)
    return side
