"""Shape inference: one rule per layer kind; errors found before any framework, naming layer, field, value."""

from __future__ import annotations

import pytest

import xconv as xc


def seed_spec(size=32):
    return xc.Sequential(
        xc.Conv2d(3, 32, kernel_size=5, padding=2),
        xc.ReLU(),
        xc.Conv2d(32, 16, kernel_size=3, padding=1),
        xc.ReLU(),
        xc.Flatten(),
        xc.Linear(16 * size * size, 10),
        input_shape=(3, size, size),
    )


def test_seed_convnet_shapes_and_params():
    infos = xc.infer(seed_spec())
    assert [i.output_shape for i in infos] == [(32, 32, 32), (32, 32, 32), (16, 32, 32), (16, 32, 32), (16384,), (10,)]
    assert [i.param_count for i in infos] == [2432, 0, 4624, 0, 0, 163850]


@pytest.mark.parametrize(
    "n, k, s, d, expected",
    [(7, 3, 1, 1, 7), (8, 3, 2, 1, 4), (7, 3, 2, 1, 4), (5, 1, 3, 1, 2), (6, 4, 3, 2, 2), (1, 7, 1, 3, 1)],
)
def test_same_padding_output_is_ceil(n, k, s, d, expected):
    spec = xc.Sequential(xc.Conv2d(1, 1, k, stride=s, dilation=d, padding="same"), input_shape=(1, n, n))
    assert xc.infer(spec)[0].output_shape == (1, expected, expected)


def test_same_padding_puts_the_extra_pixel_bottom_right():
    spec = xc.Sequential(xc.Conv2d(1, 1, 3, stride=2, padding="same"), input_shape=(1, 8, 8))
    assert xc.infer(spec)[0].padding == ((0, 1), (0, 1))


def test_linear_in_features_inferred_and_resolved_spec():
    spec = xc.Sequential(xc.Flatten(), xc.Linear(None, 4), input_shape=(2, 3, 5))
    info = xc.infer(spec)[1]
    assert info.layer == xc.Linear(30, 4)
    assert info.input_source == (2, 3, 5)


def test_flatten_source_seen_through_relu():
    spec = xc.Sequential(xc.Flatten(), xc.ReLU(), xc.Linear(None, 4), input_shape=(2, 3, 5))
    assert xc.infer(spec)[2].input_source == (2, 3, 5)


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            xc.Sequential(xc.Conv2d(4, 8, 3), input_shape=(3, 8, 8)),
            r"layer 0 \(Conv2d\): in_channels=4 but its input has 3 channels",
        ),
        (
            xc.Sequential(*seed_spec().layers[:5], xc.Linear(4096, 10), input_shape=(3, 32, 32)),
            r"^layer 5 \(Linear\): in_features=4096 but its input has 16\*32\*32=16384 features$",
        ),
        (
            xc.Sequential(xc.Conv2d(1, 1, 5), input_shape=(1, 4, 9)),
            r"layer 0 \(Conv2d\): kernel height 5 \(dilated extent 5\) is larger than the padded input height 4",
        ),
        (
            xc.Sequential(xc.Conv2d(1, 1, 3, dilation=3), input_shape=(1, 6, 6)),
            r"kernel height 3 \(dilated extent 7\) is larger than the padded input height 6",
        ),
        (
            xc.Sequential(xc.Flatten(), xc.Conv2d(1, 1, 1), input_shape=(1, 4, 4)),
            r"layer 1 \(Conv2d\): expects a \(C, H, W\) input but its input is flat with 16 features",
        ),
        (
            xc.Sequential(xc.Conv2d(1, 2, 3), xc.Linear(None, 3), input_shape=(1, 4, 4)),
            r"layer 1 \(Linear\): needs a flat input but its input has shape \(2, 2, 2\); add Flatten\(\)",
        ),
        (
            xc.Sequential(xc.Conv2d(1, 1, 3, padding=3, padding_mode="reflect"), input_shape=(1, 3, 3)),
            r"layer 0 \(Conv2d\): reflect padding needs each pad smaller than the input height",
        ),
        (
            xc.Sequential(xc.Conv2d(1, 1, 3, padding=4, padding_mode="circular"), input_shape=(1, 3, 3)),
            r"circular padding needs each pad at most the input height",
        ),
        (xc.Sequential(xc.ReLU()), r"no input_shape"),
    ],
    ids=[
        "channels",
        "in-features",
        "kernel-too-large",
        "dilated-kernel",
        "conv-after-flatten",
        "linear-on-map",
        "reflect-too-wide",
        "circular-too-wide",
        "no-input-shape",
    ],
)
def test_shape_errors(spec, message):
    with pytest.raises(xc.SpecError, match=message):
        xc.infer(spec)


def test_input_shape_given_at_call():
    spec = xc.Sequential(xc.Conv2d(3, 4, 3))
    assert xc.infer(spec, (3, 5, 6))[0].output_shape == (4, 3, 4)
    with pytest.raises(xc.SpecError, match="input_shape"):
        xc.infer(spec, (3, 5, 6, 7))


def test_summary_lists_layers_and_totals():
    lines = []
    text = xc.summary(seed_spec(), print_fn=lines.append)
    assert lines == [text]
    assert "Linear(16384, 10)" in text and "(16, 32, 32)" in text and "163,850" in text
    assert "total parameters: 170,906" in text
