"""Specs: normalised and validated at construction, immutable, hashable, equal by value, JSON round trip."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given

import xconv as xc
from xconv.testing import strategies


def test_conv_arguments_are_normalised():
    conv = xc.Conv2d(3, 32, kernel_size=5, padding=2)
    assert conv.kernel_size == (5, 5)
    assert conv.stride == (1, 1)
    assert conv.padding == ((2, 2), (2, 2))
    assert conv.dilation == (1, 1)


@pytest.mark.parametrize(
    "padding, expected",
    [
        (1, ((1, 1), (1, 1))),
        ((1, 2), ((1, 1), (2, 2))),
        (((0, 1), (2, 3)), ((0, 1), (2, 3))),
        ([[0, 1], [2, 3]], ((0, 1), (2, 3))),
        ("valid", ((0, 0), (0, 0))),
        ("VALID", ((0, 0), (0, 0))),
        ("same", "same"),
    ],
    ids=["int", "pair", "sides", "lists", "valid", "valid-upper", "same"],
)
def test_padding_forms(padding, expected):
    assert xc.Conv2d(1, 1, 3, padding=padding).padding == expected


def test_equal_by_value_and_hashable():
    a = xc.Conv2d(3, 8, 3, padding="valid")
    b = xc.Conv2d(3, 8, (3, 3), stride=1, padding=0)
    assert a == b and hash(a) == hash(b)
    s1 = xc.Sequential(a, xc.ReLU(), input_shape=(3, 8, 8))
    s2 = xc.Sequential(b, xc.ReLU(), input_shape=[3, 8, 8])
    assert s1 == s2 and hash(s1) == hash(s2)
    assert len({s1, s2}) == 1
    assert xc.Conv2d(3, 8, 3) != xc.Conv2d(3, 8, 3, bias=False)


def test_specs_are_immutable():
    conv = xc.Conv2d(3, 8, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        conv.stride = (2, 2)  # type: ignore[misc]
    spec = xc.Sequential(conv)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.layers = ()  # type: ignore[misc]


def test_readable_repr():
    assert repr(xc.Conv2d(3, 32, kernel_size=5, padding=2)) == "Conv2d(3, 32, kernel_size=5, padding=2)"
    assert repr(xc.Conv2d(3, 6, (3, 5), stride=2, groups=3, bias=False)) == (
        "Conv2d(3, 6, kernel_size=(3, 5), stride=2, groups=3, bias=False)"
    )
    assert repr(xc.Linear(out_features=10)) == "Linear(None, 10)"
    assert repr(xc.Conv2d(1, 1, 3, padding=((3, 1), (1, 1)))) == "Conv2d(1, 1, kernel_size=3, padding=((3, 1), (1, 1)))"
    assert repr(xc.Conv2d(1, 1, 3, padding=(2, 3))) == "Conv2d(1, 1, kernel_size=3, padding=(2, 3))"
    assert repr(xc.ReLU()) == "ReLU()"
    spec = xc.Sequential(xc.Flatten(), xc.Linear(None, 10), input_shape=(1, 2, 2))
    assert "input_shape=(1, 2, 2)" in repr(spec)


def test_linear_forms():
    assert xc.Linear(None, 10) == xc.Linear(out_features=10)
    assert xc.Linear(16, 10).in_features == 16
    with pytest.raises(xc.SpecError, match="out_features"):
        xc.Linear(16)


def test_nested_sequential_is_flattened():
    inner = xc.Sequential(xc.Conv2d(1, 2, 3), xc.ReLU(), input_shape=(1, 5, 5))
    outer = xc.Sequential(inner, xc.Flatten(), xc.Linear(None, 3))
    assert outer.layers == (xc.Conv2d(1, 2, 3), xc.ReLU(), xc.Flatten(), xc.Linear(None, 3))
    assert outer.input_shape == (1, 5, 5)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: xc.Conv2d(6, 8, 3, groups=4), r"`in_channels` \(=6\) must be divisible by `groups` \(=4\)"),
        (lambda: xc.Conv2d(4, 6, 3, groups=4), r"`out_channels` \(=6\) must be divisible by `groups` \(=4\)"),
        (lambda: xc.Conv2d(0, 8, 3), r"`in_channels` must be positive. Received: in_channels=0"),
        (lambda: xc.Conv2d(3, 8, 0), r"`kernel_size` must be positive"),
        (lambda: xc.Conv2d(3, 8, 3, stride=(1, 0)), r"`stride` must be positive"),
        (lambda: xc.Conv2d(3, 8, 3, dilation=-1), r"`dilation` must be positive"),
        (lambda: xc.Conv2d(3, 8, 3, padding=-1), r"`padding` must be at least 0"),
        (lambda: xc.Conv2d(3, 8, 3, padding="full"), r"Received: padding='full'"),
        (lambda: xc.Conv2d(3, 8, 3, padding=(1, 2, 3)), r"`padding` must be an int or a pair"),
        (lambda: xc.Conv2d(3, 8, 3, padding_mode="mirror"), r"`padding_mode` must be one of .*'mirror'"),
        (lambda: xc.Conv2d(3, 8, 3, bias=1), r"`bias` must be True or False"),
        (lambda: xc.Conv2d(3.5, 8, 3), r"`in_channels` must be an integer"),
        (lambda: xc.Conv2d(True, 8, 3), r"`in_channels` must be an integer"),
        (lambda: xc.Linear(0, 10), r"`in_features` must be positive"),
        (lambda: xc.Linear(10, -1), r"`out_features` must be positive"),
        (lambda: xc.Sequential(xc.ReLU(), "relu"), r"position 1 must be a layer spec"),
        (lambda: xc.Sequential(xc.ReLU(), input_shape=(3, 0, 4)), r"`input_shape` must be positive"),
        (
            lambda: xc.Sequential(xc.ReLU(), input_shape=(3, 4, 4, 4)),
            r"must be \(C, H, W\), \(tokens, features\) or \(features,\)",
        ),
    ],
    ids=[
        "groups-in",
        "groups-out",
        "zero-channels",
        "zero-kernel",
        "zero-stride",
        "negative-dilation",
        "negative-padding",
        "unknown-padding",
        "padding-triple",
        "unknown-mode",
        "bias-int",
        "float-channels",
        "bool-channels",
        "zero-in-features",
        "negative-out",
        "not-a-layer",
        "zero-size",
        "four-dim-shape",
    ],
)
def test_invalid_arguments_raise_spec_error(make, message):
    with pytest.raises(xc.SpecError, match=message):
        make()


def test_spec_error_is_a_value_error():
    assert issubclass(xc.SpecError, xc.XconvError) and issubclass(xc.XconvError, ValueError)
    assert issubclass(xc.WeightError, xc.XconvError)
    assert issubclass(xc.BackendUnavailable, ImportError)


@given(strategies.specs())
def test_repr_reads_back(spec):
    names = {k: getattr(xc, k) for k in (*xc.spec.LAYER_TYPES, *xc.spec.COMBINATORS, "Sequential", "Use")}
    assert eval(repr(spec), names) == spec


@given(strategies.specs())
def test_json_round_trip(spec):
    data = json.loads(json.dumps(spec.to_dict()))
    back = xc.from_dict(data)
    assert back == spec
    assert hash(back) == hash(spec)
    assert repr(back) == repr(spec)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"layers": []}, "format"),
        ({"format": "xconv.spec", "version": 99, "layers": []}, "version 99"),
        ({"format": "xconv.spec", "version": 1, "layers": [{"kind": "Dense"}]}, "unknown kind"),
        ({"format": "xconv.spec", "version": 1, "layers": [{"kind": "ReLU", "inplace": True}]}, "unknown fields"),
        (
            {
                "format": "xconv.spec",
                "version": 1,
                "layers": [{"kind": "Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding": "bad"}],
            },
            "layer 0: Conv2d",
        ),
    ],
    ids=["no-format", "bad-version", "unknown-kind", "unknown-field", "bad-field"],
)
def test_from_dict_errors(data, message):
    with pytest.raises(xc.SpecError, match=message):
        xc.from_dict(data)


def test_typing_only_constructor_signatures_match_the_fields():
    """Some layer classes declare, for type checkers only, an ``__init__`` that accepts the spellings the
    constructor normalises (ints for pairs, ...): its parameters must be the dataclass's own, in order."""
    import ast
    import inspect
    import textwrap

    checked = 0
    for cls in xc.spec.LAYER_TYPES.values():
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        stubs = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "__init__"]
        if not stubs:
            continue
        args = stubs[0].args
        fields = [f for f in dataclasses.fields(cls) if f.init]
        assert [a.arg for a in args.args[1:]] == [f.name for f in fields if not f.kw_only], cls.__name__
        assert [a.arg for a in args.kwonlyargs] == [f.name for f in fields if f.kw_only], cls.__name__
        assert len(args.defaults) == sum(
            1 for f in fields if not f.kw_only and (f.default is not dataclasses.MISSING)
        ), cls.__name__
        checked += 1
    assert checked >= 7
