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

#: the torchvision models also ported in float64: all of them
TORCHVISION_FLOAT64 = tuple(TORCHVISION)

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
    "NASNetMobile": (64, 64, 3),  # crops that shift by a pixel: slices
    "InceptionResNetV2": (75, 75, 3),  # residuals scaled by its CustomScaleLayer
}


def torchvision_model(name: str, seed: int = 0) -> Any:
    """A torchvision model in eval mode with seeded random weights and non-trivial BatchNorm statistics."""
    import torch

    tv = import_torchvision()
    torch.manual_seed(seed)
    model = _running_statistics(getattr(tv.models, name)(weights=None, **TORCHVISION[name][0]).eval())
    with torch.no_grad():
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
    return _running_statistics(model)


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


def _running_statistics(model: Any, affine: bool = False) -> Any:
    """BatchNorm running statistics a trained model would have and, with ``affine``, its gains and shifts too
    (timm and Hugging Face initialise the last norm of a residual branch to zero, which would hide the
    branch); the model in eval mode."""
    import torch

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                if affine and m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.1)
    return model.eval()


def _trained_statistics(model: Any) -> Any:
    """Trained-looking statistics and gains, and every other parameter initialised to one number drawn anew
    (layer scales at 1e-6 would hide their branch, and a gain of ones would hide a swapped one; StarReLU's scale
    of 1 and bias of 0 would hide each other)."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            if p.numel() >= 1 and bool((p == p.flatten()[0]).all()):
                if float(p.flatten()[0]) == 0:
                    p.normal_(0, 0.1)
                else:
                    p.uniform_(0.5, 1.5)
    return _running_statistics(model, affine=True)


#: timm models that port to Keras, one per architecture family (``timm.list_modules()``), random weights,
#: 10 classes: name -> input (C, H, W)
TIMM: dict[str, tuple[int, int, int]] = {
    "resnet10t": (3, 64, 64),
    "seresnext26d_32x4d": (3, 64, 64),
    "legacy_seresnet18": (3, 64, 64),
    "resnetv2_18": (3, 64, 64),
    "tinynet_e": (3, 64, 64),
    "tf_efficientnet_b0": (3, 64, 64),
    "mnasnet_small": (3, 64, 64),
    "mobilenetv2_050": (3, 64, 64),
    "mixnet_s": (3, 64, 64),
    "mobilenetv3_small_050": (3, 64, 64),
    "tf_mobilenetv3_small_minimal_100": (3, 64, 64),
    "lcnet_050": (3, 64, 64),
    "mobilenetv4_conv_small": (3, 64, 64),
    "hardcorenas_a": (3, 64, 64),
    "regnetx_002": (3, 64, 64),
    "regnety_002": (3, 64, 64),
    "darknet17": (3, 64, 64),
    "cs3darknet_s": (3, 64, 64),
    "cspnext_tiny": (3, 64, 64),
    "dla34": (3, 64, 64),
    "dpn48b": (3, 64, 64),
    "ghostnet_050": (3, 64, 64),
    "repghostnet_050": (3, 64, 64),
    "hrnet_w18_small": (3, 64, 64),
    "res2net50_14w_8s": (3, 64, 64),
    "rexnet_100": (3, 64, 64),
    "selecsls42b": (3, 64, 64),
    "ese_vovnet19b_slim_dw": (3, 64, 64),
    "legacy_xception": (3, 64, 64),
    "xception41": (3, 64, 64),
    "inception_v3": (3, 96, 96),
    "repvgg_a0": (3, 64, 64),
    "resnet18": (3, 64, 64),
    "gernet_s": (3, 64, 64),
    "densenet121": (3, 64, 64),
    "vgg11": (3, 64, 64),
    "starnet_s050": (3, 64, 64),
    "fasternet_t0": (3, 64, 64),
    "repvit_m1": (3, 64, 64),
    "lcnetv2_small": (3, 64, 64),
    "convnext_atto": (3, 64, 64),
    "hgnet_tiny": (3, 64, 64),
    "inception_next_atto": (3, 64, 64),
    "rdnet_tiny": (3, 64, 64),
    "fastvit_t8": (3, 64, 64),
    "pit_ti_224": (3, 64, 64),  # (its map's learned pos_embed, a PositionEmbedding2d)
    "visformer_tiny": (3, 64, 64),  # (attention over a map's pixels, heads of its channels)
    "poolformer": (3, 64, 64),
    "poolformerv2": (3, 64, 64),
    "convformer": (3, 64, 64),
    "caformer": (3, 64, 64),
}
#: timm CNN families that are refused, one model each, with the operation the refusal names
TIMM_REFUSED: dict[str, str] = {
    "resnest14d": "sum",  # split attention: a sum over the splits
    "skresnet18": "stack",  # selective kernels: the branches stacked
    "tresnet_m": "view",  # space-to-depth
}
#: the ones also ported in float64
TIMM_FLOAT64: tuple[str, ...] = (
    "resnet10t",
    "legacy_seresnet18",
    "resnetv2_18",
    "tinynet_e",
    "tf_mobilenetv3_small_minimal_100",
    "mnasnet_small",
    "darknet17",
    "dla34",
    "selecsls42b",
    "ese_vovnet19b_slim_dw",
    "regnetx_002",
    "starnet_s050",
    "poolformer",
    "poolformerv2",
    "convformer",
    "caformer",
)


#: constructor arguments that keep a test model small (VGG's 4096-wide head as a 512-wide one)
TIMM_OPTIONS: dict[str, dict[str, Any]] = {
    "vgg11": {"mlp_ratio": 0.125},
    "pit_ti_224": {"img_size": 64},
    "visformer_tiny": {"img_size": 64, "embed_dim": 48, "depth": (1, 1, 1)},
}


def _metaformers() -> dict[str, dict[str, Any]]:
    """timm's MetaFormer families as their smallest models configure them (poolformer_s12, poolformerv2_s12,
    convformer_s18, caformer_s18), at one block per stage and narrow stages (timm's model functions fix depths
    and dims; attention stages hold heads of 32 features)."""
    import torch
    from timm.models import metaformer as mf

    return {
        "poolformer": {
            "downsample_norm": None,
            "mlp_act": torch.nn.GELU,
            "mlp_bias": True,
            "norm_layers": mf.GroupNorm1,
            "layer_scale_init_values": 1e-5,
            "res_scale_init_values": None,
            "use_mlp_head": False,
        },
        "poolformerv2": {"norm_layers": mf.GroupNorm1NoBias, "use_mlp_head": False},
        "convformer": {"token_mixers": mf.SepConv, "norm_layers": mf.LayerNorm2dNoBias},  # (StarReLU, SquaredReLU)
        "caformer": {  # (attention on the last two stages: tokens, then read back as a map)
            "token_mixers": [mf.SepConv, mf.SepConv, mf.Attention, mf.Attention],
            "norm_layers": [mf.LayerNorm2dNoBias] * 2 + [mf.LayerNormNoBias] * 2,
        },
    }


def timm_model(name: str, seed: int = 0) -> Any:
    import timm
    import torch

    torch.manual_seed(seed)
    metaformers = _metaformers()
    if name in metaformers:
        from timm.models.metaformer import MetaFormer

        model = MetaFormer(num_classes=10, depths=(1, 1, 1, 1), dims=(16, 24, 32, 64), **metaformers[name])
    else:
        model = timm.create_model(name, pretrained=False, num_classes=10, **TIMM_OPTIONS.get(name, {}))
    return _trained_statistics(model)


def _hf_configs() -> dict[str, tuple[Any, Any]]:
    import transformers as hf

    return {
        "ResNet": (
            hf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], num_labels=3),
            hf.ResNetForImageClassification,
        ),
        "RegNet": (
            hf.RegNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2], groups_width=4, num_labels=3),
            hf.RegNetForImageClassification,
        ),
        "MobileNetV1": (
            hf.MobileNetV1Config(depth_multiplier=0.25, num_labels=3),
            hf.MobileNetV1ForImageClassification,
        ),
        "MobileNetV2": (
            hf.MobileNetV2Config(depth_multiplier=0.25, num_labels=3),
            hf.MobileNetV2ForImageClassification,
        ),
        "EfficientNet": (
            hf.EfficientNetConfig(width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320, num_labels=3),
            hf.EfficientNetForImageClassification,
        ),
        "ConvNext": (
            hf.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3),
            hf.ConvNextForImageClassification,
        ),
        "ConvNextV2": (
            hf.ConvNextV2Config(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3),
            hf.ConvNextV2ForImageClassification,
        ),
        "PoolFormer": (
            hf.PoolFormerConfig(hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], num_labels=3),
            hf.PoolFormerForImageClassification,
        ),
    }


def hf_model(name: str, seed: int = 0) -> Any:
    """A Hugging Face vision model built from a small config (nothing downloaded), seeded, in eval mode."""
    import torch

    config, cls = _hf_configs()[name]
    torch.manual_seed(seed)
    return _trained_statistics(cls(config))


# ---- windowed attention: small Swin, Swin V2 and MaxViT models, relative position tables drawn ----


def _tables_random(model: Any) -> Any:
    import torch

    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith(("relative_position_bias_table", "attention_biases")):
                p.normal_(0, 1)  # (timm and torchvision draw them near zero, timm's learned biases zero)
    return model.eval()


def torchvision_swin(window: int, v2: bool = False) -> Any:
    import torch

    tv = import_torchvision()
    from torchvision.models import swin_transformer as swin

    torch.manual_seed(0)
    depths = [2, 2, 2] if window == 3 else [2, 2]
    heads = [2, 2, 4][: len(depths)]
    parts = {"block": swin.SwinTransformerBlockV2, "downsample_layer": swin.PatchMergingV2} if v2 else {}
    model = tv.models.SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=depths,
        num_heads=heads,
        window_size=[window] * 2,
        num_classes=5,
        **parts,
    )
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith("logit_scale"):
                p.uniform_(0.5, 4.0)  # (initialised to log 10 in every head)
            if v2 and key.endswith("qkv.bias"):
                p.normal_(0, 1)  # (zero, and its k third unused)
    return _tables_random(model)


def torchvision_maxvit() -> Any:
    import torch

    import_torchvision()
    from torchvision.models.maxvit import MaxVit

    torch.manual_seed(0)
    model = MaxVit(
        input_size=(64, 64), stem_channels=8, partition_size=2, block_channels=[16, 32], block_layers=[1, 1],
        head_dim=8, stochastic_depth_prob=0.2, num_classes=5,
    )  # fmt: skip
    return _running_statistics(_tables_random(model))


def timm_swin(v2: bool = False, **options: Any) -> Any:
    import_torchvision()  # (timm imports torchvision)
    import timm
    import torch

    torch.manual_seed(0)
    config = {"img_size": 32, "window_size": 4, "embed_dim": 16, "depths": (2, 2), "num_heads": (2, 4), **options}
    name = "swinv2_tiny_window8_256" if v2 else "swin_tiny_patch4_window7_224"
    model = timm.create_model(name, pretrained=False, num_classes=5, **config)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith("logit_scale"):
                p.uniform_(0.5, 4.0)
            if key.endswith(("q_bias", "v_bias")):
                p.normal_(0, 1)
    return _tables_random(model)


def hf_swin(size: int, window: int) -> Any:
    import_torchvision()
    import torch
    import transformers as hf

    torch.manual_seed(0)
    depths = [2, 2] if window == 4 else [2, 2, 2]
    config = hf.SwinConfig(
        image_size=size, patch_size=4, embed_dim=16, depths=depths, num_heads=[2, 4, 4][: len(depths)],
        window_size=window, num_labels=3,
    )  # fmt: skip
    return _tables_random(hf.SwinForImageClassification(config))


def _linears_random(model: Any) -> Any:
    """Linear and conv weights of unit gain, 1 / sqrt(fan_in), and biases of 0.1 (timm and Hugging Face draw
    them at 0.02, so small that every attention weight is nearly uniform and a wrong key or query would hardly
    show)."""
    import torch

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.weight.normal_(0, (m.weight[0].numel()) ** -0.5)
                if m.bias is not None:
                    m.bias.normal_(0, 0.1)
    return model


def timm_pvt_v2() -> Any:
    """timm's PVT v2 (spatial-reduction attention: keys and values from a strided conv of the map), small."""
    import_torchvision()
    import timm
    import torch

    torch.manual_seed(0)
    config = {"embed_dims": (16, 32), "depths": (1, 1), "num_heads": (1, 2), "sr_ratios": (2, 1), "mlp_ratios": (2, 2)}
    model = timm.create_model("pvt_v2_b0", pretrained=False, num_classes=5, **config)
    return _running_statistics(_linears_random(model))


def timm_twins() -> Any:
    """timm's Twins SVT (locally-grouped attention in windows, padded where the map is not whole windows, and
    global sub-sampled attention), small."""
    import_torchvision()
    import timm
    import torch

    torch.manual_seed(0)
    config = {
        "img_size": 32, "embed_dims": (16, 32), "num_heads": (1, 2), "mlp_ratios": (2, 2), "depths": (2, 2),
        "sr_ratios": (2, 1), "wss": (3, 2),
    }  # fmt: skip
    model = timm.create_model("twins_svt_small", pretrained=False, num_classes=5, **config)
    return _running_statistics(_linears_random(model))


def timm_efficientformer() -> Any:
    """timm's EfficientFormer, small: its last stage's attention adds a learned bias per relative offset on the
    7x7 map of a 224x224 input (``attention_biases[:, attention_bias_idxs]``, the index in its state_dict),
    its q, k and v one Linear packed head by head; trained-looking statistics, layer scales and tables."""
    import_torchvision()
    import torch
    from timm.models.efficientformer import EfficientFormer

    torch.manual_seed(0)
    model = EfficientFormer(depths=(1, 1, 1, 2), embed_dims=(8, 8, 16, 16), num_vit=1, num_classes=5)
    return _tables_random(_linears_random(_trained_statistics(model)))


def timm_levit() -> Any:
    """timm's LeViT (distilled), small: attentions with a learned bias per relative offset, q, k and v packed
    head by head, its subsampling attention (the queries from every other row and column), tokens normalised
    as one batch (``LinearNorm``), Hardswish; trained-looking statistics and tables."""
    import_torchvision()
    import torch
    from timm.models.levit import LevitDistilled

    torch.manual_seed(0)
    config = {"embed_dim": (16, 24), "key_dim": 4, "depth": (1, 1), "num_heads": (2, 3), "mlp_ratio": 2}
    model = LevitDistilled(img_size=64, num_classes=5, **config)
    return _tables_random(_linears_random(_trained_statistics(model)))


def hf_levit(teacher: bool = False) -> Any:
    """Hugging Face's LeViT, small (three stages, subsampling attentions between them); with ``teacher``, its
    two heads averaged; trained-looking statistics and tables."""
    import_torchvision()
    import torch
    import transformers as hf

    config = hf.LevitConfig(
        image_size=64, hidden_sizes=[16, 24, 32], num_attention_heads=[2, 3, 4], depths=[1, 1, 1],
        key_dim=[4, 4, 4], mlp_ratio=[2, 2, 2], attention_ratio=[2, 2, 2], drop_path_rate=0, num_labels=3,
        down_ops=[["Subsample", 4, 4, 4, 2, 2], ["Subsample", 4, 6, 4, 2, 2]],
    )  # fmt: skip
    torch.manual_seed(0)
    cls = hf.LevitForImageClassificationWithTeacher if teacher else hf.LevitForImageClassification
    return _tables_random(_linears_random(_trained_statistics(cls(config))))


def hf_segformer(segmentation: bool) -> Any:
    """Hugging Face's SegFormer (its MiT encoder; with ``segmentation``, the all-MLP decoder), small."""
    import_torchvision()
    import torch
    import transformers as hf

    torch.manual_seed(0)
    config = hf.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=16, num_labels=3,
    )  # fmt: skip
    cls = hf.SegformerForSemanticSegmentation if segmentation else hf.SegformerForImageClassification
    return _running_statistics(_linears_random(cls(config)))


#: the models with attention written out (spatial-reduction attention) the tests port, as WINDOW_ZOO
REDUCTION_ZOO: dict[str, tuple[Any, tuple[int, int, int], str | None, bool]] = {
    "timm pvt_v2": (timm_pvt_v2, (3, 32, 32), None, True),
    "timm twins (windows of 3, padded)": (timm_twins, (3, 32, 32), None, True),
    "Hugging Face segformer (classification)": (lambda: hf_segformer(False), (3, 32, 32), "logits", True),
    "Hugging Face segformer (semantic segmentation)": (lambda: hf_segformer(True), (3, 32, 32), "logits", True),
}


#: the models with a learned attention bias per relative offset the tests port: name -> (model, input (C, H, W),
#: port's output=, whether the source's own state_dict loads into the ported model)
BIAS_ZOO: dict[str, tuple[Any, tuple[int, int, int], str | None, bool]] = {
    "timm efficientformer": (timm_efficientformer, (3, 224, 224), None, True),
    "timm levit": (timm_levit, (3, 64, 64), None, True),
    "Hugging Face levit": (hf_levit, (3, 64, 64), "logits", True),
    "Hugging Face levit (with teacher)": (lambda: hf_levit(teacher=True), (3, 64, 64), "logits", True),
}


#: the windowed-attention models the tests port: name -> (model, input (C, H, W), port's output=, whether the
#: source's own state_dict loads into the ported model)
WINDOW_ZOO: dict[str, tuple[Any, tuple[int, int, int], str | None, bool]] = {
    "torchvision swin (window 4)": (lambda: torchvision_swin(4), (3, 32, 32), None, True),
    "torchvision swin (window 3, padded)": (lambda: torchvision_swin(3), (3, 40, 36), None, True),
    "torchvision swin v2 (window 4)": (lambda: torchvision_swin(4, v2=True), (3, 32, 32), None, True),
    "torchvision swin v2 (window 3, padded)": (lambda: torchvision_swin(3, v2=True), (3, 40, 36), None, True),
    "torchvision maxvit": (torchvision_maxvit, (3, 64, 64), None, True),
    "timm swin (window 4)": (timm_swin, (3, 32, 32), None, True),
    "timm swin (window 3, padded)": (lambda: timm_swin(img_size=40, window_size=3), (3, 40, 40), None, True),
    # (timm's Swin V2 keeps its coordinates table and zero k bias out of its state_dict)
    "timm swinv2 (window 4)": (lambda: timm_swin(v2=True), (3, 32, 32), None, False),
    "timm swinv2 (window 3, padded)": (
        lambda: timm_swin(v2=True, img_size=40, window_size=3),
        (3, 40, 40),
        None,
        False,
    ),
    "Hugging Face swin (window 4)": (lambda: hf_swin(32, 4), (3, 32, 32), "logits", True),
    "Hugging Face swin (window 3, padded)": (lambda: hf_swin(40, 3), (3, 40, 40), "logits", True),
}


def timm_features(name: str, **config: Any) -> Any:
    """A timm backbone with ``features_only=True`` (a list of its stages' feature maps), small, random weights,
    trained-like BatchNorm statistics."""
    import_torchvision()
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, features_only=True, **config)
    return _running_statistics(model, affine=True)


def torchvision_features() -> Any:
    """torchvision's feature extractor of resnet18 (``create_feature_extractor``): a dict of three stages."""
    import_torchvision()
    import torch
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    nodes = {"layer1": "c2", "layer3": "c4", "layer4": "c5"}
    return _running_statistics(create_feature_extractor(torchvision.models.resnet18(), return_nodes=nodes), True)


def deeplab_with_aux() -> Any:
    """torchvision's DeepLabV3 (MobileNetV3 backbone) with its auxiliary head: a dict of ``out`` and ``aux``."""
    import_torchvision()
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, aux_loss=True, num_classes=3
    )
    return _running_statistics(model, affine=True)


def hidden_states(make: Any) -> Any:
    """A Hugging Face model (``make()``) that returns its ``hidden_states`` too (a tuple of every stage's output;
    its classifier unread, so its state_dict holds more than the port)."""
    import_torchvision()
    model = make()
    model.config.output_hidden_states = True
    return model


#: backbones that return several feature maps, as dense-prediction heads read them: name -> (model, input
#: (C, H, W), port's output=, whether the source's own state_dict loads into the ported model)
FEATURES_ZOO: dict[str, tuple[Any, tuple[int, int, int], str | list[str] | None, bool]] = {
    "timm resnet18 (features_only)": (lambda: timm_features("resnet18"), (3, 64, 64), None, True),
    "timm convnext_atto (features_only)": (lambda: timm_features("convnext_atto"), (3, 64, 64), None, True),
    "timm efficientnet_b0 (features_only)": (lambda: timm_features("efficientnet_b0"), (3, 64, 64), None, True),
    "timm pvt_v2 (features_only)": (
        lambda: timm_features(
            "pvt_v2_b0", embed_dims=(16, 32), depths=(1, 1), num_heads=(1, 2), sr_ratios=(2, 1), out_indices=(0, 1)
        ),
        (3, 32, 32),
        None,
        True,
    ),
    "torchvision resnet18 feature extractor": (torchvision_features, (3, 64, 64), ["c2", "c4", "c5"], False),
    "torchvision segmentation.deeplabv3 with aux": (deeplab_with_aux, (3, 64, 64), ["out", "aux"], True),
    "Hugging Face ResNet (hidden_states)": (
        lambda: hidden_states(lambda: hf_model("ResNet")),
        (3, 64, 64),
        "hidden_states",
        False,
    ),
    "Hugging Face segformer (hidden_states)": (
        lambda: hidden_states(lambda: hf_segformer(False)),
        (3, 32, 32),
        "hidden_states",
        False,
    ),
}


def port_entry(entry: tuple[Any, tuple[int, ...], Any, bool], dtype: str) -> tuple[Any, Any, Any, Any]:
    """A zoo entry (model, input (C, H, W), port's output=, whether its state_dict loads) ported to Keras with
    verification in ``dtype``, its own state_dict loaded where it loads: (source model, Keras model, a fresh
    batch, the source's result on it)."""
    import numpy as np
    import torch

    import xconv as xc

    make, shape, output, loads = entry
    model = make().eval()
    model = model.double() if dtype == "float64" else model.float()
    km = xc.port(model, to="tf", input_shape=shape, output=output)
    if loads:
        xc.set_weights(km, model.state_dict())
    x = np.random.default_rng(1).standard_normal((2, *shape)).astype(dtype)
    with torch.no_grad():
        y = model(torch.from_numpy(x))
    return model, km, x, y
