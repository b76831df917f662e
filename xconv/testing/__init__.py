"""xconv's public testing toolkit: hypothesis strategies, a per-layer equivalence check across backends
(numpy reference, torch, tf) including gradients, and the comparison rule.

>>> from xconv.testing import strategies, assert_equivalent
"""

from ._compare import TOLERANCE, max_rel_diff
from ._equivalence import DEFAULT_BACKENDS, Row, assert_equivalent, compare_layerwise, default_tolerance, format_table
from ._training import TrainParity, train_parity


def __getattr__(name: str) -> object:
    """``strategies`` is imported on first use: it needs hypothesis (the ``test`` extra), the rest does not."""
    if name == "strategies":
        import importlib

        return importlib.import_module(".strategies", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_BACKENDS",
    "TOLERANCE",
    "Row",
    "TrainParity",
    "assert_equivalent",
    "compare_layerwise",
    "default_tolerance",
    "format_table",
    "max_rel_diff",
    "strategies",
    "train_parity",
]
