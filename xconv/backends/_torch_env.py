"""Imports torch for the torch backend, the kinds' torch parts and the torch front-end: with ``_tf_env`` for
tensorflow and keras, the only modules of xconv that import a framework, and only when that framework is used."""

from __future__ import annotations

import torch as torch
import torch.fx
import torch.nn.functional as F
from torch import nn as nn

__all__ = ["F", "nn", "torch"]
