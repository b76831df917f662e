"""How xconv compares outputs: max |a - b| on unsorted arrays, scaled by the reference's magnitude."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "TOLERANCE",
    "VERIFY_BATCHES",
    "VERIFY_ID_BATCHES",
    "max_rel_diff",
    "output_shapes",
    "padding_masks",
    "probe_batches",
]

#: Default bound on max |a - b| / max(1, max |a|) per dtype. float32: the seed ConvNet reaches ~2e-6 of the
#: output scale and TF's oneDNN on/off moves results by ~6e-8, so 1e-5 leaves room for deeper random specs
#: without hiding layout errors (which measure 0.3 and more). float64: mappings reach ~1e-15.
TOLERANCE = {"float32": 1e-5, "float64": 1e-10}


def max_rel_diff(reference: Any, other: Any) -> float:
    """max |reference - other| / max(1, max |reference|), elementwise on unsorted arrays of equal shape. The
    outputs of a model with several are lists: each pair is compared at its own scale and the worst counts.

    NaN or Inf in either array gives ``inf`` (never a pass); a shape mismatch (or lists of other lengths)
    raises ``AssertionError``.

    >>> import numpy as np
    >>> round(max_rel_diff(np.array([10.0, 1.0]), np.array([10.0, 1.001])), 12)  # scaled by max(1, max |a|) = 10
    0.0001
    """
    if isinstance(reference, (list, tuple)) or isinstance(other, (list, tuple)):
        if not (isinstance(reference, (list, tuple)) and isinstance(other, (list, tuple))):
            raise AssertionError("one side is a list of outputs and the other one tensor")  # noqa: TRY004
        if len(reference) != len(other):
            raise AssertionError(f"the number of outputs differs: {len(reference)} vs {len(other)}")
        return max((max_rel_diff(a, b) for a, b in zip(reference, other)), default=0.0)
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {a.shape} vs {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    if a.size == 0:
        return 0.0
    return float(np.abs(a - b).max() / max(1.0, float(np.abs(a).max())))


def output_shapes(y: Any) -> Any:
    """A model output's shape without the batch, or (several outputs) the list of them."""
    if isinstance(y, (list, tuple)):
        return [output_shapes(part) for part in y]
    return tuple(np.shape(y)[1:])


#: the groups of one verification batch, each compared at its own scale: values past a clamp at 6 (the batch
#: times 100), exact zeros where a mask or a padding decides (a black frame; a flat input gets a run of zeros).
#: Not an all-zero image: it makes every pixel of a conv's output its bias, and a normalisation over constant
#: values (InstanceNorm, one-channel GroupNorm) then divides float32 rounding of x - mean by sqrt(eps): torch and
#: Keras differed by 1.7e-5 there, the same function in float32.
VERIFY_BATCHES = ("a standard-normal batch", "that batch times 100", "an input with exact zeros")


#: the groups of one verification batch for a model that takes token ids: random ids, and ids at both ends of
#: the vocabulary (0, often the padding id, and the last)
VERIFY_ID_BATCHES = ("random token ids", "ids 0 and the last id")


def probe_batches(
    shape: tuple[int, ...], dtype: str, seed: int, vocabulary: int | None = None
) -> list[tuple[str, np.ndarray]]:
    """The batch groups that ``port`` checks and the torch importer runs its traced graph on, each named (see
    ``VERIFY_BATCHES``): a standard-normal pair drawn from ``seed``, the same times 100, and the first with
    exact zeros (a black frame on a map, half the features of a flat input). For a model that takes token ids
    (``vocabulary``: the ids below it are valid), int64 ids instead (``VERIFY_ID_BATCHES``)."""
    if vocabulary is not None:  # (four rows in all: not the batch of three torch programs are exported for)
        ids = np.random.default_rng(seed).integers(0, vocabulary, (3, *shape))
        ends = np.where(np.arange(int(np.prod(shape))).reshape(shape) % 2 == 0, 0, vocabulary - 1)
        return [(VERIFY_ID_BATCHES[0], ids), (VERIFY_ID_BATCHES[1], ends[None].astype(np.int64))]
    x = np.random.default_rng(seed).standard_normal((2, *shape))
    groups = [(VERIFY_BATCHES[0], x), (VERIFY_BATCHES[1], 100.0 * x)]
    zeros = x[:1].copy()
    if len(shape) == 3:  # a black frame, a quarter of the smaller side wide (at least one pixel)
        k = max(1, min(shape[1:]) // 4)
        zeros[:, :, :k], zeros[:, :, -k:], zeros[:, :, :, :k], zeros[:, :, :, -k:] = 0.0, 0.0, 0.0, 0.0
    else:
        zeros[:, : max(1, shape[0] // 2)] = 0.0
    groups.append((VERIFY_BATCHES[2], zeros))
    return [(name, g.astype(dtype)) for name, g in groups]


def padding_masks(n: int, length: int) -> np.ndarray:
    """(n, length) padding masks, 1 for a token and 0 for padding: sequences of length, length - 1, ..., 1 (and
    round again), the padding at the end."""
    lengths = length - np.arange(n) % length
    return (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
