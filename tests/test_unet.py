"""A U-Net, the standard encoder-decoder for dense prediction: three levels with Concat skips, up-steps by
transposed convolution in one variant and by bilinear upsampling plus a conv in the other. The spec agrees in
every backend (outputs and gradients, float32 and float64), and hand-written torch and Keras twins port."""

from __future__ import annotations

import numpy as np
import pytest

import xconv as xc
from xconv.testing import assert_equivalent, max_rel_diff


def _up(kind, c_in, c_out):
    if kind == "transpose":
        return xc.ConvTranspose2d(c_in, c_out, 2, stride=2)
    return xc.Sequential(xc.Upsample(scale_factor=2, mode="bilinear"), xc.Conv2d(c_in, c_out, 3, padding=1))


def _block(c_in, c_out):
    return xc.Sequential(xc.Conv2d(c_in, c_out, 3, padding=1), xc.BatchNorm2d(c_out), xc.ReLU())


def unet(kind):
    bottom = xc.Sequential(xc.MaxPool2d(2), _block(8, 16), _up(kind, 16, 8))
    middle = xc.Sequential(
        xc.MaxPool2d(2), _block(4, 8), xc.Concat(xc.Identity(), bottom), _block(16, 8), _up(kind, 8, 4)
    )
    return xc.Sequential(
        _block(3, 4), xc.Concat(xc.Identity(), middle), _block(8, 4), xc.Conv2d(4, 2, 1), input_shape=(3, 16, 12)
    )


@pytest.mark.parametrize("kind", ["transpose", "bilinear"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unet_agrees_in_every_backend(both_backends, kind, dtype):
    spec = unet(kind)
    assert xc.infer(spec)[-1].output_shape == (2, 16, 12)
    assert_equivalent(spec, dtype=dtype, seed=1)


def _torch_unet(kind):
    import torch
    import torch.nn.functional as F
    from torch import nn

    def block(c_in, c_out):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1, self.enc2, self.enc3 = block(3, 4), block(4, 8), block(8, 16)
            self.dec2, self.dec1 = block(16, 8), block(8, 4)
            if kind == "transpose":
                self.up3, self.up2 = nn.ConvTranspose2d(16, 8, 2, stride=2), nn.ConvTranspose2d(8, 4, 2, stride=2)
            else:
                self.up3, self.up2 = nn.Conv2d(16, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1)
            self.head = nn.Conv2d(4, 2, 1)

        def up(self, conv, x, skip):
            if kind == "transpose":
                return conv(x)
            # the size read from the skip tensor, as segmentation code does
            return conv(F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False))

        def forward(self, x):
            s1 = self.enc1(x)
            s2 = self.enc2(F.max_pool2d(s1, 2))
            b = self.enc3(F.max_pool2d(s2, 2))
            d2 = self.dec2(torch.cat([s2, self.up(self.up3, b, s2)], dim=1))
            d1 = self.dec1(torch.cat([s1, self.up(self.up2, d2, s1)], dim=1))
            return self.head(d1)

    return UNet


@pytest.mark.parametrize("kind", ["transpose", "bilinear"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hand_written_torch_unet_ports(both_backends, kind, dtype):
    import torch

    torch.manual_seed(0)
    model = _torch_unet(kind)().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    if dtype == "float64":
        model = model.double()
    km = xc.port(model, to="tf", input_shape=(3, 16, 12))  # verify=True
    xc.set_weights(km, model.state_dict())
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 12)).astype(dtype)
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    assert max_rel_diff(expect, xc.predict(km, x)) <= xc.testing.TOLERANCE[dtype]


@pytest.mark.parametrize("kind", ["transpose", "bilinear"])
def test_hand_written_keras_unet_ports(both_backends, kind):
    import keras

    def block(x, c):
        x = keras.layers.Conv2D(c, 3, padding="same")(x)
        return keras.layers.ReLU()(keras.layers.BatchNormalization()(x))

    def up(x, c):
        if kind == "transpose":
            return keras.layers.Conv2DTranspose(c, 2, strides=2)(x)
        return keras.layers.Conv2D(c, 3, padding="same")(keras.layers.UpSampling2D(interpolation="bilinear")(x))

    inputs = keras.Input((16, 12, 3))
    s1 = block(inputs, 4)
    s2 = block(keras.layers.MaxPooling2D()(s1), 8)
    b = block(keras.layers.MaxPooling2D()(s2), 16)
    d2 = block(keras.layers.Concatenate()([s2, up(b, 8)]), 8)
    d1 = block(keras.layers.Concatenate()([s1, up(d2, 4)]), 4)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(d1))
    spec = xc.from_keras(model)
    kinds = {i.kind for i in xc.infer(spec)}
    assert ("ConvTranspose2d" if kind == "transpose" else "Upsample") in kinds and "Concat" in kinds
    tm = xc.port(model, to="torch")  # verify=True
    x = np.random.default_rng(3).standard_normal((2, 3, 16, 12)).astype("float32")
    expect = xc.to_nchw(np.asarray(model(xc.to_nhwc(x), training=False)))
    assert max_rel_diff(expect, xc.predict(tm, x)) <= xc.testing.TOLERANCE["float32"]
