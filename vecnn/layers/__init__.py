"""vecnn layers: each computes forward and backward for the whole mini-batch at once."""
from .base import Layer
from .dense import Dense
from .activations import ReLU, LeakyReLU, Sigmoid, Tanh, GELU, Softmax
from .shape import Flatten
from .dropout import Dropout
from .norm import BatchNorm1D, BatchNorm2D
from .conv import Conv2D
from .pooling import MaxPool2D, AvgPool2D, GlobalAvgPool2D
from .residual import Residual
from .preprocess import Standardize

__all__ = ["Layer", "Dense", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax",
           "Flatten", "Dropout", "BatchNorm1D", "BatchNorm2D",
           "Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "Residual", "Standardize"]
