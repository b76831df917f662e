"""xconv's public testing toolkit: hypothesis strategies and comparison helpers.

>>> from xconv.testing import strategies, max_rel_diff
"""

from . import strategies
from ._compare import TOLERANCE, max_rel_diff

__all__ = ["strategies", "max_rel_diff", "TOLERANCE"]
