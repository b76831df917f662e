"""Imports keras and tensorflow for the Keras backend, refusing a Keras that runs on another backend.

The only module of xconv that imports tensorflow / keras. Layout differences are absorbed by the weights
(xconv.layout) at transfer time; the graph holds no Transpose or Permute.
"""

from __future__ import annotations

import os

from ..errors import BackendUnavailable

_requested = os.environ.get("KERAS_BACKEND", "")
if _requested not in ("", "tensorflow"):
    raise BackendUnavailable(
        f"backend 'tf' builds Keras 3 models on TensorFlow, but KERAS_BACKEND={_requested!r}; "
        "unset KERAS_BACKEND or set it to 'tensorflow' before keras is imported"
    )

import keras
import tensorflow as tf

if keras.backend.backend() != "tensorflow":
    raise BackendUnavailable(
        f"backend 'tf' builds Keras 3 models on TensorFlow, but keras is running on {keras.backend.backend()!r}; "
        "unset KERAS_BACKEND or set it to 'tensorflow' before keras is imported"
    )


__all__ = ["keras", "tf"]
