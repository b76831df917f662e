"""The model zoos as test corpus: torchvision's and keras.applications' classification models with random
weights (nothing is downloaded).

torchvision from the package registry is built against CUDA torch: beside the CPU torch its compiled
operators do not load and ``import torchvision`` fails on ``torchvision::nms``. Declaring the schemas of the
two operators its Python code registers kernels for makes the pure-Python model zoo import; that is done only
when the plain import fails.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_LIBRARY: Any = None  # kept alive: the schemas live as long as the library object


def import_torchvision() -> Any:
    global _LIBRARY
    import torch

    try:
        import torchvision
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
        _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
        _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIBRARY.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import sys

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]  # the failed import left half-initialised modules behind
        import torchvision
    return torchvision


#: torchvision models that port to Keras: name -> (constructor keyword arguments, input (C, H, W))
TORCHVISION: dict[str, tuple[dict[str, Any], tuple[int, int, int]]] = {
    "resnet18": ({}, (3, 64, 64)),
    "resnet50": ({}, (3, 64, 64)),
    "squeezenet1_1": ({}, (3, 64, 64)),
    "googlenet": ({"aux_logits": False, "init_weights": True}, (3, 64, 64)),
    "densenet121": ({}, (3, 64, 64)),
    "regnet_x_400mf": ({}, (3, 64, 64)),
    "mobilenet_v2": ({}, (3, 64, 64)),
    "mobilenet_v3_small": ({}, (3, 64, 64)),
    "mobilenet_v3_large": ({}, (3, 64, 64)),
    "efficientnet_b0": ({}, (3, 64, 64)),
    "efficientnet_v2_s": ({}, (3, 64, 64)),
    "mnasnet0_5": ({}, (3, 64, 64)),
    "regnet_y_400mf": ({}, (3, 64, 64)),
    "resnext50_32x4d": ({}, (3, 64, 64)),
    "inception_v3": ({"aux_logits": False, "init_weights": True}, (3, 75, 75)),
    "shufflenet_v2_x0_5": ({}, (3, 64, 64)),
    "convnext_tiny": ({}, (3, 64, 64)),
}

#: torchvision segmentation models that port to Keras (their forward returns {"out": ...}): name -> input (C, H, W)
SEGMENTATION: dict[str, tuple[int, int, int]] = {
    "fcn_resnet50": (3, 96, 96),
    "deeplabv3_mobilenet_v3_large": (3, 96, 96),
    "lraspp_mobilenet_v3_large": (3, 96, 96),
}

#: keras.applications models that port to torch: name -> input (H, W, C)
KERAS_APPLICATIONS: dict[str, tuple[int, int, int]] = {
    "ResNet50": (64, 64, 3),
    "ResNet50V2": (64, 64, 3),
    "DenseNet121": (64, 64, 3),
    "MobileNetV2": (64, 64, 3),
    "Xception": (71, 71, 3),
    "MobileNet": (64, 64, 3),
    "MobileNetV3Small": (64, 64, 3),
    "EfficientNetV2B0": (64, 64, 3),
    "EfficientNetB0": (64, 64, 3),  # Rescaling and Normalization inside, always
    "EfficientNetV2B0+preprocessing": (64, 64, 3),
    "MobileNetV3Small+preprocessing": (64, 64, 3),
    "InceptionV3": (75, 75, 3),
    "ConvNeXtTiny": (64, 64, 3),
}


def torchvision_model(name: str, seed: int = 0) -> Any:
    """A torchvision model in eval mode with seeded random weights and non-trivial BatchNorm statistics."""
    import torch

    tv = import_torchvision()
    torch.manual_seed(seed)
    model = getattr(tv.models, name)(weights=None, **TORCHVISION[name][0]).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # running statistics a trained model would have
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        for key, p in model.named_parameters():
            if key.endswith("layer_scale"):  # initialised to 1e-6, which would hide every residual branch
                p.uniform_(0.5, 1.5)
    return model


def segmentation_model(name: str, seed: int = 0) -> Any:
    """A torchvision segmentation model (no auxiliary head, nothing downloaded) in eval mode with seeded random
    weights and non-trivial BatchNorm statistics."""
    import torch

    tv = import_torchvision()
    torch.manual_seed(seed)
    model = getattr(tv.models.segmentation, name)(weights=None, weights_backbone=None, aux_loss=False).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def keras_model(name: str) -> Any:
    import inspect

    import keras

    keras.utils.set_random_seed(0)
    base, _, preprocessing = name.partition("+")
    build = getattr(keras.applications, base)
    extra = (
        {"include_preprocessing": bool(preprocessing)}
        if "include_preprocessing" in inspect.signature(build).parameters
        else {}
    )
    # logits, not probabilities: a softmax over 1,000 classes would shrink every difference to ~1e-3 of itself
    model = build(weights=None, input_shape=KERAS_APPLICATIONS[name], classifier_activation=None, **extra)
    rng = np.random.default_rng(0)
    for layer in model._flatten_layers():
        if type(layer).__name__ == "LayerScale":  # initialised to 1e-6, which would hide every residual branch
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype(layer.gamma.dtype))
    return model
