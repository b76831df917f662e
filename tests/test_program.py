"""Exported programs as sources: a ``torch.export.ExportedProgram`` or a ``.pt2`` archive ports like the module
it was exported from in eval mode, under the program's own keys, at a fixed or a dynamic batch size."""

from __future__ import annotations

import numpy as np
import pytest

import xconv as xc
from xconv.testing import max_rel_diff


def _model():
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.block = nn.Conv2d(8, 8, 3, padding=1)
            self.drop = nn.Dropout(0.25)
            self.head = nn.Linear(8 * 6 * 6, 5)

        def forward(self, x):
            y = self.stem(x)
            y = torch.relu(y + self.block(y))
            return self.head(self.drop(y.view(y.size(0), -1)))

    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.stem[1].running_mean.normal_(0, 0.1)
        model.stem[1].running_var.uniform_(0.5, 1.5)
        model.stem[1].weight.uniform_(0.5, 1.5)
    return model.eval()


def _export(model, batch=2, dynamic=False):
    import torch

    kw = {"dynamic_shapes": ({0: torch.export.Dim("batch")},)} if dynamic else {}
    return torch.export.export(model, (torch.randn(batch, 3, 6, 6),), strict=False, **kw)


@pytest.mark.parametrize("dynamic", [False, True], ids=["fixed-batch", "dynamic-batch"])
def test_an_exported_program_ports_with_its_own_keys(both_backends, dynamic):
    import torch

    model = _model()
    program = _export(model, dynamic=dynamic)
    spec, weights = xc.from_torch(program, return_weights=True)  # the input shape is the program's
    assert sorted(weights) == sorted(model.state_dict())
    kinds = [i.kind for i in xc.infer(spec)]
    assert {"Conv2d", "BatchNorm2d", "Add", "Dropout", "Linear"} <= set(kinds)  # the layers, which follow modes
    x = np.random.default_rng(0).standard_normal((5, 3, 6, 6)).astype("float32")  # not the exported batch
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    for to in ("tf", "torch"):
        ported = xc.port(program, to)  # verified against the program, in pieces of its batch size if fixed
        assert max_rel_diff(expect, xc.predict(ported, x)) <= xc.testing.TOLERANCE["float32"]
        xc.set_weights(ported, {k: v * 0 for k, v in program.state_dict.items()})  # (moved away, then back)
        xc.set_weights(ported, program.state_dict)  # the program's own keys, strictly
        assert max_rel_diff(expect, xc.predict(ported, x)) <= xc.testing.TOLERANCE["float32"]


def test_a_pt2_archive_ports_from_its_path(both_backends, tmp_path):
    import torch

    model = _model()
    path = tmp_path / "net.pt2"
    torch.export.save(_export(model), str(path))
    km = xc.port(str(path), "tf")
    x = np.random.default_rng(1).standard_normal((3, 3, 6, 6)).astype("float32")
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    assert max_rel_diff(expect, xc.predict(km, x)) <= xc.testing.TOLERANCE["float32"]
    assert xc.infer(xc.from_torch(path))[-1].output_shape == (5,)
    with pytest.raises(xc.XconvError, match="cannot be read as a torch.export archive"):
        (tmp_path / "bad.pt2").write_bytes(b"not a zip")
        xc.from_torch(str(tmp_path / "bad.pt2"))


def test_a_program_runs_any_batch_in_pieces_of_its_own(both_backends):
    import torch

    from xconv.importers.torch_program import ExportedModel

    model = _model()
    source = ExportedModel(_export(model, batch=2))
    assert source.batch == 2 and source.input_shape == (3, 6, 6) and not source.training
    x = torch.randn(5, 3, 6, 6)
    with torch.no_grad():
        pieces = torch.cat([model(x[:2]), model(x[2:4]), model(x[4:])])
        assert max_rel_diff(pieces.numpy(), source(x).numpy()) <= 1e-6  # (kernels by batch size: rounding)
        assert source(x[:0]).shape == (0, 5)
    assert not source.train().training  # a program has no modes


def test_program_batch_norms_keep_their_momentum_keys_and_batch_free_parameters(both_backends):
    """A program's batch norm keeps the momentum its call records (the ported model trains its statistics as
    the source would); a lone BatchNorm at the root keeps its root keys; a program exported for a batch equal
    to a parameter's first axis reads that axis as the parameter's, not as the batch."""
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=0.3)).eval()
    tm = xc.port(_export(model), "torch")
    assert [m.momentum for m in tm.modules() if isinstance(m, nn.BatchNorm2d)] == [0.3]
    lone = nn.BatchNorm2d(3).eval()
    program = torch.export.export(lone, (torch.randn(2, 3, 6, 6),), strict=False)
    km = xc.port(program, "tf")
    assert xc.set_weights(km, program.state_dict) == []

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.gamma = nn.Parameter(torch.rand(4) + 0.5)

        def forward(self, x):
            return self.conv(x) * self.gamma.view(4, 1, 1)

    program = _export(Scaled().eval(), batch=4)  # gamma's view(4, 1, 1) starts with the batch size
    assert "LayerScale" in [i.kind for i in xc.infer(xc.from_torch(program))]
    xc.port(program, "tf")


def test_programs_that_are_not_one_eval_function_are_refused(both_backends):
    import torch
    from torch import nn

    trained = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    program = torch.export.export(trained, (torch.randn(2, 3, 6, 6),), strict=False)
    with pytest.raises(xc.UnsupportedLayerError, match="exported in training mode"):
        xc.from_torch(program)
    batch_statistics = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    program = torch.export.export(batch_statistics, (torch.randn(2, 3, 6, 6),), strict=False)
    assert not program.graph_signature.buffers_to_mutate  # (it writes nothing: seen by its batch norm call)
    with pytest.raises(xc.UnsupportedLayerError, match="exported in training mode"):
        xc.from_torch(program)
    with pytest.raises(xc.UnsupportedLayerError, match=r"takes inputs of shape \(N, 3, 6, 6\)"):
        xc.from_torch(_export(_model()), (3, 8, 8))
    with pytest.raises(xc.XconvError, match="expected a torch.export.ExportedProgram"):
        from xconv.importers.torch_program import as_source

        as_source(object(), "from_torch")


def test_a_program_batch_norm_read_with_another_eps_is_caught(both_backends, monkeypatch):
    """Verification runs the program itself: an importer that read a batch norm's eps wrong is caught."""
    from xconv.importers import torch_forms

    real = torch_forms._program_batch_norm

    def wrong(*args):
        bn = real(*args)
        bn.eps = 0.5
        return bn

    monkeypatch.setattr(torch_forms, "_program_batch_norm", wrong)
    with pytest.raises(xc.PortError, match="differs from the source torch model"):
        xc.port(_export(_model()), "tf")
