"""Importing hand-written models, porting them across frameworks, and safetensors checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given

import xconv as xc
import xconv.shapes
import xconv.testing
from xconv import layout
from xconv.testing import max_rel_diff, strategies

from .test_toolkit import unpermuted_dense


def hand_torch(size=8):
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.Sequential(nn.ZeroPad2d((1, 0, 1, 0)), nn.Conv2d(8, 4, kernel_size=3, stride=2)),  # pad folds
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * (size // 2) ** 2, 10),
    )


def hand_keras(size=8):
    import keras

    return keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Conv2D(8, 5, padding="same", activation="relu"),
            keras.layers.ZeroPadding2D(((1, 0), (1, 0))),
            keras.layers.Conv2D(4, 3, strides=2, padding="valid"),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


def test_from_torch_folds_pads_and_flattens_nesting(both_backends):
    spec = xc.from_torch(hand_torch(), input_shape=(3, 8, 8))
    # every layer is named by its module's qualified name, so the weights have the state_dict's own keys
    assert spec == xc.Sequential(
        xc.Conv2d(3, 8, 5, padding=2, name="0"),
        xc.ReLU(name="1"),
        xc.Conv2d(8, 4, 3, stride=2, padding=((1, 0), (1, 0)), name="2.1"),
        xc.ReLU(name="3"),
        xc.Flatten(name="4"),
        xc.Linear(64, 10, name="5"),
        input_shape=(3, 8, 8),
    )


def test_torch_to_keras_to_torch(both_backends):
    import torch

    hand = hand_torch()
    km = xc.port(hand, to="tf", input_shape=(3, 8, 8))
    tm = xc.port(km, to="torch")
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expect = hand(torch.from_numpy(x)).numpy()
    assert max_rel_diff(expect, xc.predict(km, x)) < 1e-5
    assert max_rel_diff(expect, xc.predict(tm, x)) < 1e-5
    _, original = xc.from_torch(hand, (3, 8, 8), return_weights=True)
    back = xc.get_weights(tm)
    for k in original:
        np.testing.assert_array_equal(back[k], original[k])


def test_keras_to_torch_to_keras(both_backends):
    hand = hand_keras()
    spec = xc.from_keras(hand)
    assert spec.input_shape == (3, 8, 8)
    assert [layer.kind for layer in spec.layers] == ["Conv2d", "ReLU", "Conv2d", "ReLU", "Flatten", "Linear"]
    assert spec.layers[0].padding == "same" and spec.layers[2].padding == ((1, 0), (1, 0))
    tm = xc.port(hand, to="torch")
    km = xc.port(tm, to="tf")
    x = np.random.default_rng(2).standard_normal((4, 3, 8, 8)).astype(np.float32)
    expect = np.asarray(hand(xc.to_nhwc(x)))
    assert max_rel_diff(expect, xc.predict(tm, x)) < 1e-5
    assert max_rel_diff(expect, xc.predict(km, x)) < 1e-5
    dense_back = km.get_layer(hand.layers[-1].name).kernel.numpy()  # layers keep their Keras names
    np.testing.assert_array_equal(dense_back, hand.layers[-1].kernel.numpy())


def test_functional_chain_imports_and_residual_is_refused(both_backends):
    import keras

    inp = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(2, 3, padding="same")(inp)
    out = keras.layers.Dense(3, activation="relu")(keras.layers.Flatten()(h))
    assert [layer.kind for layer in xc.from_keras(keras.Model(inp, out)).layers] == [
        "Conv2d",
        "Flatten",
        "Linear",
        "ReLU",
    ]
    res = keras.layers.Add()([inp, keras.layers.Conv2D(2, 3, padding="same")(inp)])
    spec = xc.from_keras(keras.Model(inp, keras.layers.Flatten()(res)))
    assert [item.kind for item in spec.layers] == ["Add", "Flatten"]
    # a tensor read inside two branches of one join is not a fork-join nesting: written flat, with references
    a = keras.layers.Conv2D(2, 1, name="shared")(inp)
    b = keras.layers.Conv2D(2, 1)(a)
    c = keras.layers.Conv2D(2, 1)(inp)
    d = keras.layers.Add()([b, c])
    e = keras.layers.Add(name="late")([d, a])
    f = keras.layers.Add()([e, keras.layers.Conv2D(2, 1)(c)])
    model = keras.Model(inp, f)
    spec = xc.from_keras(model)
    late = next(item for item in spec.layers if item.name == "late")
    assert xc.Use("shared") in late.branches  # 'late' reads the shared conv again
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(np.float32)
    expect = xc.to_nchw(np.asarray(model(xc.to_nhwc(x))))
    assert max_rel_diff(expect, xc.predict(xc.port(model, "torch"), x)) < 1e-5


def test_unsupported_layers_are_named(both_backends):
    import keras
    from torch import nn

    with pytest.raises(xc.UnsupportedLayerError, match=r"module '1' \(Mish\) is not supported; supported: nn.Conv2d"):
        xc.from_torch(nn.Sequential(nn.Linear(4, 4), nn.Mish()), (4,))
    root = xc.Linear(4, 4, name="linear", keys={"weight": "weight", "bias": "bias"})  # (a root module: its own keys)
    assert xc.from_torch(nn.Linear(4, 4), (4,)) == xc.Sequential(root, input_shape=(4,))

    class Mish(nn.Module):
        def forward(self, x):
            return x.sinh()

    with pytest.raises(xc.UnsupportedLayerError, match=r"operation .sinh. \(aten.sinh\) is not supported"):
        xc.from_torch(Mish(), (4,))
    with pytest.raises(xc.UnsupportedLayerError, match="activation 'softplus' is not supported"):
        xc.from_keras(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softplus")]))
    with pytest.raises(xc.UnsupportedLayerError, match="Softmax needs an explicit dim"):
        xc.from_torch(nn.Sequential(nn.Softmax()), (4,))
    with pytest.raises(xc.UnsupportedLayerError, match="divisor_override is not supported"):
        xc.from_torch(nn.Sequential(nn.AvgPool2d(2, divisor_override=3)), (1, 4, 4))
    with pytest.raises(xc.UnsupportedLayerError, match="no torch padding/ceil_mode with the same windows"):
        xc.from_keras(keras.Sequential([keras.Input((5, 5, 1)), keras.layers.MaxPooling2D(4, 1, padding="same")]))
    # a ZeroPad2d that cannot fold into a reflect-padded conv stays a layer of its own
    padded = nn.Sequential(nn.ZeroPad2d(1), nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"))
    assert [layer.kind for layer in xc.from_torch(padded, (1, 5, 5)).layers] == ["ZeroPad2d", "Conv2d"]
    xc.port(padded, to="tf", input_shape=(1, 5, 5))
    with pytest.raises(xc.XconvError, match="needs input_shape"):
        xc.port(nn.Sequential(nn.ReLU()), to="tf")


def test_port_verify_catches_a_wrong_mapping(both_backends, monkeypatch):
    monkeypatch.setattr(layout, "to_keras", unpermuted_dense)
    with pytest.raises(xc.PortError, match="differs from the source torch model"):
        xc.port(hand_torch(), to="tf", input_shape=(3, 8, 8))


@pytest.mark.parametrize("side", ["source", "target"])
def test_port_rounding_allowance_still_catches_a_small_mapping_error(both_backends, monkeypatch, side):
    """Beyond the fixed float32 tolerance, port compares both models with the spec computed in float64 and allows
    a multiple of float32 rounding. One weight 0.1% off, in the ported model or in the original, is far more
    than rounding and still fails, with both distances in the message."""
    import torch

    import xconv._port as porting

    torch.manual_seed(0)
    model = hand_torch().eval()
    real = porting.build_with_weights

    def nudged(spec, backend, weights, **kw):
        if backend == "tf":
            weights = {k: (v * 1.001 if k == "0.weight" else v) for k, v in weights.items()}
        return real(spec, backend, weights, **kw)

    if side == "target":
        monkeypatch.setattr(porting, "build_with_weights", nudged)
    else:  # the import reports weights that are not the model's own
        real_import = porting._import

        def imported(*args, **kw):
            name, spec, weights = real_import(*args, **kw)
            return name, spec, {k: (v * 1.001 if k == "0.weight" else v) for k, v in weights.items()}

        monkeypatch.setattr(porting, "_import", imported)
    with pytest.raises(xc.PortError, match=r"differs from the source torch model .*rounding alone") as info:
        xc.port(model, to="tf", input_shape=(3, 8, 8))
    assert "against the spec computed in float64" in str(info.value)


def test_port_error_message_stays_short_for_a_large_spec(both_backends, monkeypatch):
    import xconv._port as porting

    monkeypatch.setattr(layout, "to_keras", unpermuted_dense)
    spec = xc.Sequential(
        *[xc.Conv2d(3, 3, 1) for _ in range(60)], xc.Flatten(), xc.Linear(None, 4), input_shape=(3, 4, 4)
    )
    with pytest.raises(xc.PortError, match="more lines: xconv.summary") as info:
        xc.port(xc.build(spec, "torch"), to="tf")
    assert len(str(info.value).splitlines()) <= porting._SHORT_LINES + 2


def _torch_from_spec(spec):
    """A hand-written nn.Sequential for ``spec``: 4-sided zero padding as nn.ZeroPad2d before the conv."""
    import torch
    from torch import nn

    infos = xc.infer(spec)
    mods = []
    for info in infos:
        layer = info.layer
        if isinstance(layer, xc.Conv2d):
            (t, b), (l, r) = info.padding
            common = {
                "stride": layer.stride,
                "dilation": layer.dilation,
                "groups": layer.groups,
                "bias": layer.bias,
                "padding_mode": layer.padding_mode,
            }
            if t == b and l == r:
                mods.append(
                    nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, padding=(t, l), **common)
                )
            else:
                assume(layer.padding_mode == "zeros")
                mods.append(
                    nn.Sequential(
                        nn.ZeroPad2d((l, r, t, b)),
                        nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, **common),
                    )
                )
        elif isinstance(layer, xc.Linear):
            mods.append(nn.Linear(layer.in_features, layer.out_features, bias=layer.bias))
        else:  # every other layer is one native module: nn.MaxPool2d, nn.BatchNorm2d, nn.Softmax, ...
            from xconv.backends.torch_backend import _BUILDERS

            mods.append(_BUILDERS[type(layer)](info, {"dtype": torch.float64}))
    hand = nn.Sequential(*mods).double()
    # BatchNorm with non-trivial statistics, as after training
    generator = torch.Generator().manual_seed(0)
    for m in hand.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.track_running_stats:
            m.running_mean.normal_(generator=generator)
            m.running_var.uniform_(0.01, 2.0, generator=generator)
            m.num_batches_tracked.fill_(7)
    return hand


# hand-written chains (graphs: test_graphs.py). No batch-statistics BatchNorm: a spec without weights ports in
# float32 (nothing tells a weightless torch module's dtype), where x - mean cancels for a nearly constant channel
# (measured 1.3e-5 after Rescaling(1/255)), as strategies.specs documents for batch_stats
@given(spec=strategies.specs(max_layers=4, graphs=False, batch_stats=False))
def test_random_hand_written_torch_models_port(both_backends, spec):
    hand = _torch_from_spec(spec)
    km = xc.port(hand, to="tf", input_shape=spec.input_shape)  # verify=True: raises on any mismatch
    assert xc.infer(xc.spec_of(km))[-1].output_shape == xc.infer(spec)[-1].output_shape


# ---- checkpoints ----

SPEC = xc.Sequential(
    xc.Conv2d(2, 4, 3, stride=2, padding="same", padding_mode="zeros"),
    xc.ReLU(),
    xc.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
    xc.Flatten(),
    xc.Linear(None, 3),
    input_shape=(2, 6, 6),
)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_round_trip(backend, dtype, tmp_path):
    model = xc.build(SPEC, backend, seed=0, dtype=dtype)
    path = tmp_path / "m.safetensors"
    xc.save(path, model)
    spec, weights = xc.load(path)
    assert spec == xc.spec_of(model)
    original = xc.get_weights(model)
    assert list(weights) == list(original)
    for k in original:
        assert weights[k].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(weights[k], original[k])
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(dtype)
    for other in ("torch", "tf"):
        loaded = xc.load_model(path, backend=other)
        assert max_rel_diff(xc.predict(model, x), xc.predict(loaded, x)) <= xc.testing.TOLERANCE[dtype]


def test_file_loads_with_plain_safetensors_and_torch(both_backends, tmp_path):
    import safetensors.numpy
    import torch

    km = xc.build(SPEC, "tf", seed=0)
    path = tmp_path / "m.safetensors"
    xc.save(path, km)
    plain = safetensors.numpy.load_file(str(path))
    tm = xc.build(SPEC, "torch")
    tm.load_state_dict({k: torch.from_numpy(v) for k, v in plain.items()})
    np.testing.assert_array_equal(xc.get_weights(tm)["4.weight"], xc.get_weights(km)["4.weight"])


def test_save_spec_and_weights(tmp_path):
    w = xc.get_weights(xc.build(SPEC, "numpy", seed=0))
    xc.save(tmp_path / "s.safetensors", SPEC, w)
    spec, loaded = xc.load(tmp_path / "s.safetensors")
    assert spec == xc.shapes.resolve(SPEC)[0] and loaded["4.weight"].dtype == np.float64
    with pytest.raises(xc.WeightError, match="missing '0.weight'"):
        xc.save(tmp_path / "t.safetensors", SPEC, {k: v for k, v in w.items() if k != "0.weight"})
    with pytest.raises(xc.XconvError, match="weights are required"):
        xc.save(tmp_path / "t.safetensors", SPEC)


def test_bad_files_give_clear_errors(tmp_path):
    import json

    import safetensors.numpy

    good = tmp_path / "good.safetensors"
    xc.save(good, xc.build(SPEC, "numpy", seed=0))
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "garbage": b"\x00" * 64,
        "empty": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(xc.XconvError, match="not a readable .safetensors file"):
            xc.load(tmp_path / name)
    with pytest.raises(xc.XconvError, match="no such checkpoint"):
        xc.load(tmp_path / "missing.safetensors")
    safetensors.numpy.save_file({"a": np.zeros(2, np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(xc.XconvError, match="not an xconv checkpoint"):
        xc.load(tmp_path / "other.safetensors")
    meta = {
        "format": "xconv.checkpoint",
        "format_version": "1",
        "spec": json.dumps(xc.shapes.resolve(SPEC)[0].to_dict()),
    }
    safetensors.numpy.save_file(
        {"0.weight": np.zeros((4, 2, 3, 3), np.float32)}, str(tmp_path / "wrong.safetensors"), meta
    )
    with pytest.raises(xc.XconvError, match="missing '0.bias'"):
        xc.load(tmp_path / "wrong.safetensors")
    meta["spec"] = '{"format": "xconv.spec", "version": 1, "layers": [{"kind": "Evil", "code": "rm -rf"}]}'
    safetensors.numpy.save_file({"0.weight": np.zeros(1, np.float32)}, str(tmp_path / "evil.safetensors"), meta)
    with pytest.raises(xc.XconvError, match="spec in the checkpoint is invalid"):
        xc.load(tmp_path / "evil.safetensors")


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    import safetensors.numpy

    path = tmp_path / "m.safetensors"
    xc.save(path, xc.build(SPEC, "numpy", seed=0))
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a fi")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        xc.save(path, xc.build(SPEC, "numpy", seed=1))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


# ---- class-based torch modules, traced with torch.fx (the seed's styles) ----


def _seed_style_modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    def flatten(x):
        N = x.shape[0]
        return x.view(N, -1)

    class ThreeLayerConvNet(nn.Module):  # the seed's nn.Module style
        def __init__(self, in_channel, channel_1, channel_2, num_classes):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channel, channel_1, kernel_size=5, padding=2, bias=True)
            self.conv2 = nn.Conv2d(channel_1, channel_2, kernel_size=3, padding=1, bias=True)
            self.fc = nn.Linear(channel_2 * 8 * 8, num_classes)

        def forward(self, x):
            x = F.relu(self.conv1(x))
            x = F.relu(self.conv2(x))
            return self.fc(flatten(x))

    class Barebones(nn.Module):  # the seed's three_layer_convnet(x, params), params held as parameters
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.w1 = nn.Parameter(torch.randn(6, 3, 5, 5, generator=g) * 0.1)
            self.b1 = nn.Parameter(torch.randn(6, generator=g))
            self.w2 = nn.Parameter(torch.randn(4, 6, 3, 3, generator=g) * 0.1)
            self.b2 = nn.Parameter(torch.randn(4, generator=g))
            self.w3 = nn.Parameter(torch.randn(10, 4 * 8 * 8, generator=g) * 0.1)
            self.b3 = nn.Parameter(torch.randn(10, generator=g))

        def forward(self, x):
            x = torch.relu(F.conv2d(x, self.w1, self.b1, padding=2))
            x = F.relu(F.conv2d(x, self.w2, self.b2, padding=1))
            return F.linear(x.reshape(x.shape[0], -1), self.w3, self.b3)

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return torch.flatten(self.c(x) + x, 1)

    class Branchy(nn.Module):
        def forward(self, x):
            return x.relu() if x.sum() > 0 else x

    return ThreeLayerConvNet(3, 8, 4, 10), Barebones(), Residual(), Branchy()


@pytest.mark.parametrize("which", [0, 1], ids=["ThreeLayerConvNet", "barebones"])
def test_seed_style_modules_port_both_ways(both_backends, which):
    import torch

    model = _seed_style_modules()[which]
    spec = xc.from_torch(model, input_shape=(3, 8, 8))
    assert [layer.kind for layer in spec.layers] == ["Conv2d", "ReLU", "Conv2d", "ReLU", "Flatten", "Linear"]
    km = xc.port(model, to="tf", input_shape=(3, 8, 8))
    tm = xc.port(km, to="torch")
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    assert max_rel_diff(expect, xc.predict(km, x)) < 1e-5
    assert max_rel_diff(expect, xc.predict(tm, x)) < 1e-5
    assert all(p.requires_grad for p in model.parameters())  # the user's model is left as it was


def test_residual_imports_and_untraceable_modules_are_refused(both_backends):
    _, _, residual, branchy = _seed_style_modules()
    spec = xc.from_torch(residual, (3, 8, 8))
    assert [item.kind for item in spec.layers] == ["Add", "Flatten"]
    xc.port(residual, to="tf", input_shape=(3, 8, 8))
    with pytest.raises(xc.UnsupportedLayerError, match="cannot be traced by torch.fx"):
        xc.from_torch(branchy, (3, 8, 8))


@given(spec=strategies.specs(max_layers=4))
def test_random_keras_models_import_exactly(both_backends, spec):
    """Keras models built from random specs (native layers plus xconv's pad/crop/subsample helpers) import to
    a spec that computes the same function (it may differ in form: a crop becomes a large stride)."""
    km = xc.build(spec, "tf", dtype="float64", seed=0)
    imported, weights = xc.from_keras(km, return_weights=True)
    tm = xc.build(imported, "torch", dtype="float64")
    xc.set_weights(tm, weights)
    x = np.random.default_rng(0).standard_normal((2, *spec.input_shape))
    assert max_rel_diff(xc.predict(km, x), xc.predict(tm, x)) <= 1e-10


# ---- command line ----


def test_cli_convert_chain_and_check(both_backends, tmp_path, capsys):
    import json

    from xconv import cli

    from .test_backends import AWKWARD

    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(AWKWARD.to_dict()))
    assert cli.main(["summary", str(spec_path)]) == 0
    assert "total parameters" in capsys.readouterr().out
    first = tmp_path / "a.safetensors"
    xc.save(first, xc.build(AWKWARD, "torch", seed=0))
    assert cli.main(["convert", str(first), "--to", "tf", "-o", str(tmp_path / "a.keras")]) == 0
    assert cli.main(["convert", str(tmp_path / "a.keras"), "--to", "torch", "-o", str(tmp_path / "a.pt")]) == 0
    assert (
        cli.main(
            [
                "convert",
                str(tmp_path / "a.pt"),
                "--spec",
                str(spec_path),
                "--to",
                "safetensors",
                "-o",
                str(tmp_path / "b.safetensors"),
            ]
        )
        == 0
    )
    _, w0 = xc.load(first)
    _, w1 = xc.load(tmp_path / "b.safetensors")
    for k in w0:
        np.testing.assert_array_equal(w0[k], w1[k])
    capsys.readouterr()
    assert cli.main(["check", str(tmp_path / "a.keras"), "--batch", "3"]) == 0
    out = capsys.readouterr().out
    assert "OK: torch and tf agree on every layer" in out and out.count(" output ") == len(AWKWARD.layers)


def test_cli_check_fails_on_a_mismatch(both_backends, tmp_path, capsys, monkeypatch):
    from xconv import cli

    path = tmp_path / "m.safetensors"
    xc.save(path, xc.build(SPEC, "numpy", seed=0))
    monkeypatch.setattr(layout, "to_keras", unpermuted_dense)
    assert cli.main(["check", str(path), "--dtype", "float64"]) == 1
    assert "FAIL: 1 layer(s) beyond tolerance, first: layer 4 (Linear)" in capsys.readouterr().out


def test_cli_errors_are_one_line_with_exit_2(tmp_path, capsys):
    from xconv import cli

    (tmp_path / "w.pt").write_bytes(b"not a pickle")
    (tmp_path / "x.txt").write_text("hi")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 10)
    cases = [
        (["check", str(tmp_path / "missing.safetensors")], "no such file"),
        (["convert", str(tmp_path / "w.pt"), "--to", "tf", "-o", "o.keras"], "needs --spec"),
        (["summary", str(tmp_path / "x.txt")], "unknown file type '.txt'"),
        (["summary", str(tmp_path / "bad.safetensors")], "not a readable .safetensors file"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(xc.XconvError):
        cli.main(["--debug", "summary", str(tmp_path / "bad.safetensors")])


def test_cli_rejects_a_hostile_pt_file(both_backends, tmp_path, capsys):
    import pickle

    from xconv import cli

    class Evil:
        def __reduce__(self):
            return (print, ("EXECUTED",))

    (tmp_path / "spec.json").write_text(__import__("json").dumps(SPEC.to_dict()))
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"0.weight": Evil()}, f)
    assert (
        cli.main(
            [
                "convert",
                str(tmp_path / "evil.pt"),
                "--spec",
                str(tmp_path / "spec.json"),
                "--to",
                "safetensors",
                "-o",
                str(tmp_path / "o.safetensors"),
            ]
        )
        == 2
    )
    captured = capsys.readouterr()
    assert "EXECUTED" not in captured.out and "not a readable torch state_dict" in captured.err


def test_python_dash_m_xconv():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "xconv", "--help"], check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "summary" in out.stdout and "convert" in out.stdout
