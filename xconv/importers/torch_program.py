"""A ``torch.export.ExportedProgram`` (or a ``.pt2`` archive of one, ``torch.export.save``) as a torch source.

A program holds no ``torch.nn`` layers, only ATen calls on parameters and buffers with their ``state_dict``
names, so every call is mapped as the function it is (``aten.conv2d`` on ``features.0.weight`` is the Conv2d
``features.0``) and the keys stay the program's. The program is the function of the model in the mode it was
exported in: one exported in eval mode ports as the model in eval mode, and the ported model's BatchNorm and
Dropout layers then follow their own modes as torch's do. A program exported in training mode (a batch norm on
batch statistics) is refused: export the model after ``model.eval()``.

A program exported for a fixed batch size runs only on batches of that size (its guard says so). The source it
is wrapped in, :class:`ExportedModel`, runs any batch through it in pieces of that size (the last piece filled
up with copies of its first row and cut back), which is the same function for a program whose samples do not
mix, as an eval-mode model's do not.
"""

from __future__ import annotations

import os
from typing import Any

from ..backends._torch_env import nn, torch
from ..errors import UnsupportedLayerError, XconvError

__all__ = ["ExportedModel", "as_source", "is_program"]


def is_program(value: Any) -> bool:
    return isinstance(value, torch.export.ExportedProgram)


def as_source(value: Any, who: str) -> ExportedModel:
    """An ExportedProgram, or the path of a ``.pt2`` archive, as an :class:`ExportedModel`."""
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if not path.lower().endswith(".pt2"):
            raise XconvError(f"{who}: a torch model file must be a torch.export archive (.pt2). Received: {path!r}")
        try:
            value = torch.export.load(path)
        except Exception as e:  # noqa: BLE001 - reported with the file's name
            raise XconvError(
                f"{who}: {path!r} cannot be read as a torch.export archive ({type(e).__name__}: {e})"[:400]
            )
    if not is_program(value):
        raise XconvError(f"{who}: expected a torch.export.ExportedProgram. Received: {type(value).__name__}")
    return ExportedModel(value)


class ExportedModel(nn.Module):
    """An exported program as the module it came from: the program's parameters and buffers under their own
    names, and a forward that runs the program (in pieces of its batch size, when that is fixed). Its
    ``training`` flag is False: a program has no modes."""

    def __init__(self, program: Any) -> None:
        super().__init__()
        sig = program.graph_signature
        if len(sig.user_inputs) != 1 or len(sig.user_outputs) < 1:
            raise UnsupportedLayerError(
                f"from_torch: the exported program takes {len(sig.user_inputs)} inputs and returns "
                f"{len(sig.user_outputs)} outputs; xconv imports a model of one input tensor that returns a tensor"
            )
        if sig.buffers_to_mutate or sig.user_inputs_to_mutate or _trains(program):
            raise UnsupportedLayerError(
                "from_torch: the exported program normalises with batch statistics or writes its buffers (it was "
                "exported in training mode); export the model after model.eval()"
            )
        placeholder = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name in sig.user_inputs)
        val = placeholder.meta.get("val")
        if not isinstance(val, torch.Tensor) or val.dim() < 2 or not val.is_floating_point():
            raise UnsupportedLayerError(
                "from_torch: the exported program's input is not a float tensor with a batch axis "
                f"({getattr(val, 'dtype', None)}, shape {tuple(getattr(val, 'shape', ()))})"
            )
        dims = list(val.shape)
        if not all(isinstance(d, int) for d in dims[1:]):
            raise UnsupportedLayerError(
                f"from_torch: the exported program's input shape {tuple(dims)} has dynamic sizes beside the "
                "batch; export it for one input size"
            )
        inner = program.module()
        object.__setattr__(self, "program", program)
        object.__setattr__(self, "_run", inner)
        #: the input shape the program was exported for, without the batch
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in dims[1:])
        #: the fixed batch size of the program, or None where the batch is dynamic
        self.batch: int | None = int(dims[0]) if isinstance(dims[0], int) else None
        for name, child in inner.named_children():
            if not name.startswith("_guards"):
                self._modules[name] = child
        for name, p in inner._parameters.items():
            self._parameters[name] = p
        for name, b in inner._buffers.items():
            self._buffers[name] = b
        self.training = False
        for m in self.modules():
            m.training = False

    def train(self, mode: bool = True) -> ExportedModel:
        """A program has no modes: it stays the function it was exported as (``training`` stays False)."""
        return self

    def forward(self, x: Any) -> Any:
        run: Any = self.__dict__["_run"]
        if x.shape[0] == 0:  # (an empty batch: the outputs' shapes, from one batch of zeros)
            return _cat([run(x.new_zeros((self.batch or 1, *x.shape[1:])))], 0)
        if self.batch is None or x.shape[0] == self.batch:
            return run(x)
        n, pieces = x.shape[0], []
        for start in range(0, n, self.batch):
            piece = x[start : start + self.batch]
            short = self.batch - piece.shape[0]
            if short:
                piece = torch.cat([piece, piece[:1].expand(short, *piece.shape[1:])])
            pieces.append(run(piece))
        return _cat(pieces, n)


def _trains(program: Any) -> bool:
    """Whether a batch norm of the program runs in training mode (on the batch's statistics)."""
    for n in program.graph.nodes:
        schema = getattr(n.target, "_schema", None) if n.op == "call_function" else None
        if schema is None or "batch_norm" not in schema.name:
            continue
        names = [a.name for a in schema.arguments]
        if "training" in names:
            at = names.index("training")
            if bool(n.args[at] if len(n.args) > at else n.kwargs.get("training", False)):
                return True
    return False


def _cat(pieces: list[Any], n: int) -> Any:
    """The pieces' outputs joined along the batch and cut to ``n`` rows (dicts and tuples entry by entry)."""
    first = pieces[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(pieces)[:n]
    if isinstance(first, dict):
        return {k: _cat([p[k] for p in pieces], n) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(_cat([p[i] for p in pieces], n) for i in range(len(first)))
    raise UnsupportedLayerError(f"from_torch: the exported program returns a {type(first).__name__}")
