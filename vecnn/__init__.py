"""vecnn: neural networks trained with fully vectorized array code.

Every layer computes its forward and backward pass for the whole mini-batch at once
(``Z = X @ W + b`` for all samples and units in one matrix product), never with Python loops
over samples or neurons. ``vecnn.reference`` holds the loop versions of the same math.
"""

__version__ = "0.1.0"

from . import backend, callbacks, init, layers, losses, optim
from .backend import set_num_threads
from .callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    History,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
)
from .io import load_model as load
from .model import Sequential
from .registry import register_layer, register_loss


def __getattr__(name):
    # heavier or optional parts load on first use, keeping `import vecnn` light
    import importlib

    if name in ("data", "reference", "gradcheck", "presets"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'vecnn' has no attribute {name!r}")


__all__ = [
    "Sequential",
    "load",
    "layers",
    "losses",
    "optim",
    "callbacks",
    "init",
    "backend",
    "register_layer",
    "register_loss",
    "set_num_threads",
    "Callback",
    "EarlyStopping",
    "History",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "LearningRateScheduler",
    "CSVLogger",
    "data",
    "reference",
    "gradcheck",
    "presets",
    "__version__",
]
