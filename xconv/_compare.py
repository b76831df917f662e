"""How xconv compares outputs: max |a - b| on unsorted arrays, scaled by the reference's magnitude."""

from __future__ import annotations

import numpy as np

__all__ = ["TOLERANCE", "max_rel_diff"]

#: Default bound on max |a - b| / max(1, max |a|) per dtype. float32: the seed ConvNet reaches ~2e-6 of the
#: output scale and TF's oneDNN on/off moves results by ~6e-8, so 1e-5 leaves room for deeper random specs
#: without hiding layout errors (which measure 0.3 and more). float64: mappings reach ~1e-15.
TOLERANCE = {"float32": 1e-5, "float64": 1e-10}


def max_rel_diff(reference: np.ndarray, other: np.ndarray) -> float:
    """max |reference - other| / max(1, max |reference|), elementwise on unsorted arrays of equal shape.

    NaN or Inf in either array gives ``inf`` (never a pass); a shape mismatch raises ``AssertionError``.

    >>> import numpy as np
    >>> round(max_rel_diff(np.array([10.0, 1.0]), np.array([10.0, 1.001])), 12)  # scaled by max(1, max |a|) = 10
    0.0001
    """
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {a.shape} vs {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    if a.size == 0:
        return 0.0
    return float(np.abs(a - b).max() / max(1.0, float(np.abs(a).max())))
