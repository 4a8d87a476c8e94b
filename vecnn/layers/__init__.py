"""vecnn layers: each computes forward and backward for the whole mini-batch at once."""

from .activations import GELU, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .norm import BatchNorm1D, BatchNorm2D
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .preprocess import Standardize
from .residual import Residual
from .shape import Flatten

__all__ = [
    "Layer",
    "Dense",
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "GELU",
    "Softmax",
    "Flatten",
    "Dropout",
    "BatchNorm1D",
    "BatchNorm2D",
    "Conv2D",
    "MaxPool2D",
    "AvgPool2D",
    "GlobalAvgPool2D",
    "Residual",
    "Standardize",
]
