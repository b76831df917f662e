"""Resampling: Upsample: the Keras parts (built layers and their weight layouts, and the Keras layers that import as these
kinds)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import resample
from ..._info import LayerInfo
from ...backends._tf_env import keras, tf
from ...errors import SpecError, UnsupportedLayerError
from .._keras_names import keras_name
from ..pool._keras import _pair
from . import Upsample


def native_upsampling(info: LayerInfo, dtype: str) -> str | None:
    """The ``UpSampling2D`` interpolation that computes this Upsample node, or None: integer factors whose
    source rows are torch's (nearest: repeat; bilinear: TensorFlow's half-pixel weights, which it computes in
    float32 even for float64 tensors, measured 1e-6 from torch in float64, so float32 models only)."""
    layer: Upsample = info.layer  # type: ignore[assignment]
    (_, h, w), (_, ho, wo) = info.input_shape, info.output_shape
    if ho % h or wo % w:
        return None
    factors = (ho // h, wo // w)
    mine = resample.layer_taps(layer, (h, w), (ho, wo))
    if layer.mode != "bilinear":
        repeat = all((t.i0 == np.arange(n * f) // f).all() for t, n, f in zip(mine, (h, w), factors))
        return "nearest" if repeat else None
    theirs = [resample.taps(n, n * f, "bilinear", False, None) for n, f in zip((h, w), factors)]
    same = all(
        (a.i0 == b.i0).all() and (a.i1 == b.i1).all() and np.allclose(a.w1, b.w1, rtol=0, atol=1e-12)
        for a, b in zip(mine, theirs)
    )
    return "bilinear" if same and dtype == "float32" else None


def _upsample(info: LayerInfo, x: Any, dtype: str) -> Any:
    layer: Upsample = info.layer  # type: ignore[assignment]
    (_, h, w), (_, ho, wo) = info.input_shape, info.output_shape
    native = native_upsampling(info, dtype)
    if native is not None:
        return keras.layers.UpSampling2D((ho // h, wo // w), interpolation=native, dtype=dtype, name=keras_name(info))(
            x
        )
    return TorchUpsample2D(
        (h, w),
        (ho, wo),
        layer.mode,
        layer.align_corners,
        layer.size,
        layer.scale_factor,
        dtype=dtype,
        name=keras_name(info),
    )(x)


@keras.saving.register_keras_serializable(package="xconv")
class TorchUpsample2D(keras.layers.Layer):
    """torch's ``nn.Upsample`` where ``UpSampling2D`` is not the same function: per axis, a gather of the source
    rows (nearest modes) or two gathers weighted by torch's bilinear weights, all from :mod:`xconv.resample`
    (constants made from the sizes at construction; no transposes). ``size`` / ``scale_factor`` are the spec's."""

    def __init__(
        self,
        input_size: Any,
        output_size: Any,
        mode: str,
        align_corners: Any = None,
        size: Any = None,
        scale_factor: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input_size, self.output_size = _pair(input_size), _pair(output_size)
        self.mode, self.align_corners = str(mode), None if align_corners is None else bool(align_corners)
        self.size = None if size is None else _pair(size)
        self.scale_factor = None if scale_factor is None else tuple(float(v) for v in scale_factor)
        factors = self.scale_factor or (None, None)
        self._taps = [
            resample.taps(n, o, self.mode, self.align_corners, f)
            for n, o, f in zip(self.input_size, self.output_size, factors)
        ]

    def call(self, x: Any) -> Any:
        for axis, t in ((1, self._taps[0]), (2, self._taps[1])):
            if t.nearest and len(t.i0) == x.shape[axis] and (t.i0 == np.arange(len(t.i0))).all():
                continue  # an axis that is copied
            y = tf.gather(x, tf.constant(t.i0, dtype=tf.int32), axis=axis)
            if not t.nearest:
                shape = [1, 1, 1, 1]
                shape[axis] = -1
                w0 = tf.constant(t.w0.reshape(shape), dtype=x.dtype)
                w1 = tf.constant(t.w1.reshape(shape), dtype=x.dtype)
                y = y * w0 + tf.gather(x, tf.constant(t.i1, dtype=tf.int32), axis=axis) * w1
            x = y
        return x

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], *self.output_size, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "input_size": self.input_size,
            "output_size": self.output_size,
            "mode": self.mode,
            "align_corners": self.align_corners,
            "size": self.size,
            "scale_factor": self.scale_factor,
        }


BUILDERS: dict[type, Any] = {
    Upsample: _upsample,
}


UPSAMPLE = (keras.layers.UpSampling2D, keras.layers.Resizing, TorchUpsample2D)


def upsample(layer: Any, where: str, current: tuple[int, ...]) -> Upsample:
    """The Upsample of an UpSampling2D (integer factors: torch's nearest, which repeats rows, or bilinear with
    half-pixel centres), a Resizing (TensorFlow's nearest resize is torch's nearest-exact; bilinear) or
    xconv's own TorchUpsample2D."""
    try:
        if type(layer) is TorchUpsample2D:
            return Upsample(layer.size, layer.scale_factor, layer.mode, layer.align_corners)
        if type(layer) is keras.layers.UpSampling2D:
            if layer.interpolation == "bilinear":
                return Upsample(scale_factor=tuple(layer.size), mode="bilinear")
            if layer.interpolation == "nearest":
                _, h, w = current
                for mode in ("nearest", "nearest-exact"):  # whichever repeats rows for this size (both, in practice)
                    taps = resample.layer_taps(
                        Upsample(scale_factor=tuple(layer.size), mode=mode),
                        (h, w),
                        (h * layer.size[0], w * layer.size[1]),
                    )
                    if all((t.i0 == np.arange(len(t.i0)) // f).all() for t, f in zip(taps, layer.size)):
                        return Upsample(scale_factor=tuple(layer.size), mode=mode)
        elif type(layer) is keras.layers.Resizing and not (
            layer.crop_to_aspect_ratio or layer.pad_to_aspect_ratio or layer.antialias
        ):
            resize_mode = {"nearest": "nearest-exact", "bilinear": "bilinear"}.get(layer.interpolation)
            if resize_mode is not None:
                return Upsample((int(layer.height), int(layer.width)), mode=resize_mode)
    except SpecError as e:
        raise UnsupportedLayerError(f"from_keras: {where}: {e}") from None
    raise UnsupportedLayerError(
        f"from_keras: {where}: only UpSampling2D with interpolation 'nearest' or 'bilinear' and Resizing with "
        "'nearest' or 'bilinear', without crop_to_aspect_ratio, pad_to_aspect_ratio or antialias, are supported"
    )


#: Keras layer class (exactly) -> (layer, where, its input's logical shape) -> (spec layer, Keras arrays)
KERAS_IMPORTS: dict[type, Any] = {
    cls: lambda layer, where, current: (upsample(layer, where, current), {}) for cls in UPSAMPLE
}
