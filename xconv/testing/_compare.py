"""Re-export of xconv's comparison rule (it lives outside xconv.testing so ``port`` needs no hypothesis)."""

from .._compare import TOLERANCE, max_rel_diff

__all__ = ["TOLERANCE", "max_rel_diff"]
