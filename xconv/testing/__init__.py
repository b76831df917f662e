"""xconv's public testing toolkit: hypothesis strategies, a per-layer equivalence check across backends
(numpy reference, torch, tf) including gradients, and the comparison rule.

>>> from xconv.testing import strategies, assert_equivalent
"""

from . import strategies
from ._compare import TOLERANCE, max_rel_diff
from ._training import TrainParity, train_parity
from ._equivalence import DEFAULT_BACKENDS, Row, assert_equivalent, compare_layerwise, default_tolerance, format_table

__all__ = [
    "strategies",
    "assert_equivalent",
    "compare_layerwise",
    "format_table",
    "default_tolerance",
    "Row",
    "train_parity",
    "TrainParity",
    "max_rel_diff",
    "TOLERANCE",
    "DEFAULT_BACKENDS",
]
