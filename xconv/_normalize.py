"""Argument normalisation shared by the layer specs: every accepted spelling becomes one canonical form."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any, cast

from .errors import SpecError

Pair = tuple[int, int]
Padding = tuple[Pair, Pair]

#: the spellings the constructors accept for a ``Pair`` field: an int or (h, w)
PairLike = int | Sequence[int]
#: the spellings accepted for an explicit padding: an int, (ph, pw) or ((top, bottom), (left, right))
PaddingLike = int | Sequence[int] | Sequence[Sequence[int]]


def as_int(owner: str, name: str, value: Any, *, minimum: int | None = None) -> int:
    """An integer (numpy integers too, bools refused), at least ``minimum`` when given."""
    if isinstance(value, bool):
        raise SpecError(f"{owner}: `{name}` must be an integer. Received: {name}={value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise SpecError(f"{owner}: `{name}` must be an integer. Received: {name}={value!r}") from None
    if minimum is not None and out < minimum:
        relation = "positive" if minimum == 1 else f"at least {minimum}"
        raise SpecError(f"{owner}: `{name}` must be {relation}. Received: {name}={value!r}")
    return out


def as_pair(owner: str, name: str, value: Any, *, minimum: int) -> Pair:
    """An int or an (h, w) pair, returned as (h, w)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise SpecError(f"{owner}: `{name}` must be an int or a pair (h, w). Received: {name}={value!r}")
        h = as_int(owner, name, value[0], minimum=minimum)
        w = as_int(owner, name, value[1], minimum=minimum)
        return (h, w)
    v = as_int(owner, name, value, minimum=minimum)
    return (v, v)


def as_padding(owner: str, value: Any) -> Padding | str:
    """'same', or explicit ((top, bottom), (left, right)); 'valid' and every int form become explicit."""
    if isinstance(value, str):
        v = value.lower()
        if v == "same":
            return "same"
        if v == "valid":
            return ((0, 0), (0, 0))
        raise SpecError(
            f"{owner}: `padding` must be an int, (ph, pw), ((top, bottom), (left, right)), 'same' or 'valid'. "
            f"Received: padding={value!r}"
        )
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (list, tuple)) for v in value):
        top, bottom = as_pair(owner, "padding", value[0], minimum=0)
        left, right = as_pair(owner, "padding", value[1], minimum=0)
        return ((top, bottom), (left, right))
    if isinstance(value, (list, tuple)) and any(isinstance(v, (list, tuple)) for v in value):
        raise SpecError(
            f"{owner}: `padding` pairs must be given for both axes, ((top, bottom), (left, right)). "
            f"Received: padding={value!r}"
        )
    ph, pw = as_pair(owner, "padding", value, minimum=0)
    return ((ph, ph), (pw, pw))


def as_float(
    owner: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number (bools refused) within [low, high] (an open end when ``low_open``/``high_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise SpecError(f"{owner}: `{name}` must be a number. Received: {name}={value!r}")
    out = float(value)
    bad = not math.isfinite(out)
    if low is not None:
        bad = bad or out < low or (low_open and out == low)
    if high is not None:
        bad = bad or out > high or (high_open and out == high)
    if bad:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        rule = " and ".join(r for r in (lo, hi) if r) or "finite"
        raise SpecError(f"{owner}: `{name}` must be {rule}. Received: {name}={value!r}")
    return out


def as_choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise SpecError(f"{owner}: `{name}` must be one of {options}. Received: {name}={value!r}")
    return value


def as_bool(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{owner}: `{name}` must be True or False. Received: {name}={value!r}")
    return value


def as_shape(owner: str, value: Any) -> tuple[int, ...]:
    """A logical input shape without batch: (C, H, W), (L, E) tokens or (features,)."""
    if not isinstance(value, (list, tuple)) and hasattr(value, "__iter__") and not isinstance(value, (str, bytes)):
        value = tuple(value)  # torch.Size, numpy arrays, generators
    if isinstance(value, (list, tuple)) and len(value) in (1, 2, 3):
        return tuple(as_int(owner, "input_shape", v, minimum=1) for v in value)
    raise SpecError(
        f"{owner}: `input_shape` must be (C, H, W), (tokens, features) or (features,), without the batch axis. "
        f"Received: input_shape={value!r}"
    )


def compact(value: Any) -> Any:
    """Shortest spelling of a normalised value, for repr: (3, 3) -> 3, ((1, 1), (2, 2)) -> (1, 2)."""
    if isinstance(value, tuple) and len(value) == 2:
        a, b = compact(value[0]), compact(value[1])
        if isinstance(a, tuple) or isinstance(b, tuple):
            return value  # a 4-sided padding is shown in full, the only spelling that reads back
        return a if a == b else (a, b)
    return value


def as_keys(owner: str, value: Any) -> tuple[tuple[str, str | tuple[str, ...]], ...]:
    """``keys`` as sorted (param, key) pairs, from a mapping or pairs: each key a non-empty string, or a list
    of at least two (the parts of a fused parameter, in order)."""

    def key_of(k: Any) -> str | tuple[str, ...] | None:
        if isinstance(k, str):
            return k or None
        if isinstance(k, (list, tuple)) and len(k) >= 2 and all(isinstance(s, str) and s for s in k):
            return tuple(k)
        return None

    try:
        pairs = sorted(((value.items() if hasattr(value, "items") else value) or ()), key=lambda pair: str(pair[0]))
    except (TypeError, ValueError, IndexError, KeyError):
        pairs = None
    if pairs is None or not all(
        isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[0], str) and p[0] and key_of(p[1]) is not None
        for p in pairs
    ):
        raise SpecError(
            f"{owner}: keys must map parameter names to non-empty key strings (or lists of two or more, the parts "
            f"of a fused parameter). Received: {value!r}"
        )
    out = tuple((str(p), cast(Any, key_of(k))) for p, k in pairs)
    if len({p for p, _ in out}) != len(out):
        raise SpecError(f"{owner}: keys names a parameter twice. Received: {value!r}")
    return out


def as_name(owner: str, value: Any) -> str | None:
    """None, or a non-empty string without "/" (dots allowed: torch module paths)."""
    if value is None:
        return None
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise SpecError(
            f"{owner}: `name` must be dot-separated non-empty parts of letters, digits and _ - : # @ (no '/', "
            f"spaces or empty parts: torch module paths and Keras layer names). Received: name={value!r}"
        )
    return value


_NAME = __import__("re").compile(r"[A-Za-z0-9_\-:#@]+(\.[A-Za-z0-9_\-:#@]+)*")
