"""Keras 3 export: a vecnn model as an equivalent ``keras.Model`` (functional API), same weights.

The Keras model takes the input vecnn takes, NCHW images included, and gives the same outputs:
every image layer is built with ``data_format="channels_first"``, so no transpose is needed
anywhere. Where Keras has no layer with vecnn's exact semantics, built-in layers compose it
(never a ``Lambda``, so the saved ``.keras`` file loads with ``safe_mode`` and without vecnn):

- Conv2D padding is a ``ZeroPadding2D`` before a ``"valid"`` convolution; Keras refuses a
  stride with a dilation, so a dilated strided convolution runs at stride 1 and a
  ``MaxPooling2D(pool_size=1, strides=stride)`` keeps every stride-th output (a subsampling).
- MaxPool2D padding counts as -inf in vecnn; Keras pads only with zeros, so the border is
  made of copies of the edge rows and columns (``Cropping2D`` + ``Concatenate``): a window
  that reaches into the border always holds the edge pixel it copies, so its maximum is the
  maximum over the real pixels, exactly. AvgPool2D padding counts zeros, as ``ZeroPadding2D``.
- ``Flatten(data_format="channels_last")``: a plain row-major reshape, vecnn's (C, H, W)
  order (Keras' ``"channels_first"`` Flatten would transpose to (H, W, C) first).
- BatchNorm: ``BatchNormalization(axis=1)``, ``momentum = 1 - vecnn's momentum`` (vecnn, like
  PyTorch, weighs the new batch by ``momentum``; Keras weighs the running value).
- GELU: ``Activation("gelu")`` (exact erf form); the tanh form from ``Rescaling``,
  ``Multiply``, ``Add`` and ``Activation("tanh")``.
- Standardize: ``Normalization`` with its mean and variance (``std**2``) as weights.
- Residual: the block's layers, then ``Add`` with the shortcut.

Keras 3 runs on TensorFlow, JAX, PyTorch or NumPy, and takes its backend once, when it is
first imported (the ``KERAS_BACKEND`` variable, else ``~/.keras/keras.json``, else
TensorFlow). ``import_keras`` leaves an imported Keras and a set ``KERAS_BACKEND`` alone; when
neither is there and the configured backend is not installed, it sets ``KERAS_BACKEND`` to
the first of JAX and PyTorch that is (the only way to choose a Keras 3 backend).

>>> from vecnn.interop.keras import to_keras, save
>>> kmodel = to_keras(model)          # doctest: +SKIP
>>> save(kmodel, "model.keras")       # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .onnx import host, sample_shape

log = logging.getLogger(__name__)

#: Keras backend name -> the module it needs; FALLBACKS: tried in order when the configured one is missing
_BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch", "numpy": "numpy"}
FALLBACKS = ("jax", "torch")
_TORCH_ARRAY_WARNING = "__array__ implementation doesn't accept a copy keyword"
_INSTALL = "pip install 'vecnn[keras]' (Keras 3) and one of its backends, e.g. pip install 'vecnn[torch]'"


def _configured_backend() -> str:
    """The backend Keras would take when imported now, without ``KERAS_BACKEND``."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as f:
            backend = json.load(f).get("backend")
    except (OSError, ValueError, AttributeError):
        backend = None
    return backend if isinstance(backend, str) and backend else "tensorflow"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def import_keras():
    """``keras`` (3.x), imported with a backend that is installed (see the module docstring)."""
    if "keras" not in sys.modules and not os.environ.get("KERAS_BACKEND"):
        wanted = _configured_backend()
        if not _installed(_BACKEND_MODULES.get(wanted, wanted)):
            found = next((b for b in FALLBACKS if _installed(_BACKEND_MODULES[b])), None)
            if found is None:
                raise ImportError(
                    f"vecnn.interop.keras: Keras' backend {wanted!r} is not installed, nor JAX or PyTorch: {_INSTALL}"
                )
            log.info("Keras backend %r is not installed; using %r (KERAS_BACKEND)", wanted, found)
            os.environ["KERAS_BACKEND"] = found
    try:
        import keras
    except ImportError as e:
        raise ImportError(f"vecnn.interop.keras needs Keras 3 ({e}): {_INSTALL}") from None
    if int(str(keras.__version__).split(".")[0]) < 3:
        raise ImportError(f"vecnn.interop.keras needs Keras 3, found Keras {keras.__version__}: {_INSTALL}")
    return keras


# -- one builder per vecnn layer: (keras, layer, x, name) -> the output tensor ------------------
F32 = {"dtype": "float32"}
CF = {"data_format": "channels_first", **F32}


def _dense(k, layer, x, name):
    d = k.layers.Dense(layer.out_features, use_bias=layer.bias, name=name, **F32)
    y = d(x)
    d.set_weights([host(layer.params["W"])] + ([host(layer.params["b"])] if layer.bias else []))  # W: (in, out)
    return y


def _zero_pad(k, x, padding, name):
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return k.layers.ZeroPadding2D(((ph, ph), (pw, pw)), name=f"{name}_pad", **CF)(x)


def _conv(k, layer, x, name):
    x = _zero_pad(k, x, layer.padding, name)
    subsample = layer.stride != (1, 1) and layer.dilation != (1, 1)  # Keras refuses both at once
    conv = k.layers.Conv2D(
        layer.out_channels,
        layer.kernel_size,
        strides=(1, 1) if subsample else layer.stride,
        dilation_rate=layer.dilation,
        padding="valid",
        use_bias=layer.bias,
        name=name,
        **CF,
    )
    y = conv(x)
    W = host(layer.params["W"]).transpose(2, 3, 1, 0)  # (O, C, kh, kw) -> Keras' (kh, kw, C, O)
    conv.set_weights([W] + ([host(layer.params["b"])] if layer.bias else []))
    if subsample:  # every stride-th output of the stride-1 convolution
        y = k.layers.MaxPooling2D(pool_size=1, strides=layer.stride, name=f"{name}_stride", **CF)(y)
    return y


def _edge_pad(k, x, padding, name):
    """``x`` (N, C, H, W) with a border of copies of its edge rows and columns."""
    ph, pw = padding
    _, _, H, W = x.shape
    if (ph and H is None) or (pw and W is None):
        raise ValueError(f"to_keras: {name}: a padded MaxPool2D needs the image size; pass input_shape=(C, H, W)")
    for axis, p, size, crops in ((2, ph, H, lambda a, b: ((a, b), (0, 0))), (3, pw, W, lambda a, b: ((0, 0), (a, b)))):
        if p:
            first = k.layers.Cropping2D(crops(0, size - 1), name=f"{name}_edge{axis}a", **CF)(x)
            last = k.layers.Cropping2D(crops(size - 1, 0), name=f"{name}_edge{axis}b", **CF)(x)
            x = k.layers.Concatenate(axis=axis, name=f"{name}_pad{axis}", **F32)([first] * p + [x] + [last] * p)
    return x


def _max_pool(k, layer, x, name):
    x = _edge_pad(k, x, layer.padding, name)  # vecnn pads with -inf: edge copies give the same maxima
    return k.layers.MaxPooling2D(layer.kernel_size, strides=layer.stride, padding="valid", name=name, **CF)(x)


def _avg_pool(k, layer, x, name):
    x = _zero_pad(k, x, layer.padding, name)  # zeros count in the mean, as in vecnn
    return k.layers.AveragePooling2D(layer.kernel_size, strides=layer.stride, padding="valid", name=name, **CF)(x)


def _batch_norm(k, layer, x, name):
    bn = k.layers.BatchNormalization(axis=1, epsilon=layer.eps, momentum=1.0 - layer.momentum, name=name, **F32)
    y = bn(x)
    bn.set_weights(
        [host(layer.params[p]) for p in ("gamma", "beta")]
        + [host(layer.state[s]) for s in ("running_mean", "running_var")]
    )
    return y


def _gelu(k, layer, x, name):
    if layer.approximate == "none":
        return k.layers.Activation("gelu", name=name, **F32)(x)  # Keras' default: the exact erf form
    # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    x3 = k.layers.Multiply(name=f"{name}_x3", **F32)([x, x, x])
    inner = k.layers.Add(name=f"{name}_sum", **F32)([x, k.layers.Rescaling(0.044715, name=f"{name}_c", **F32)(x3)])
    t = k.layers.Activation("tanh", name=f"{name}_tanh", **F32)(
        k.layers.Rescaling(math.sqrt(2 / math.pi), name=f"{name}_k", **F32)(inner)
    )
    cdf = k.layers.Rescaling(0.5, offset=0.5, name=f"{name}_cdf", **F32)(t)
    return k.layers.Multiply(name=name, **F32)([x, cdf])


def _standardize(k, layer, x, name):
    if not layer.adapted:
        raise ValueError(f"to_keras: {layer!r} has no statistics yet; call adapt(X_train) before exporting")
    std = host(layer.state["std"])
    if std.min() < k.config.epsilon():  # Keras divides by max(sqrt(variance), epsilon)
        raise ValueError(
            f"to_keras: {layer!r} has a std of {std.min():.3g}, below Keras' epsilon {k.config.epsilon():g}, "
            f"which Keras' Normalization would divide by instead"
        )
    ndim = len(x.shape) - 1
    axis = {"channel": 1, "feature": tuple(range(1, ndim + 1)), "global": None}[layer.per]
    norm = k.layers.Normalization(axis=axis, name=name, **F32)
    y = norm(x)
    keep = [w.shape for w in norm.weights[:2]]  # (mean, variance) shapes Keras keeps
    mean = host(layer.state["mean"]).reshape(keep[0])
    variance = (std.astype(np.float64) ** 2).astype(np.float32).reshape(keep[1])
    norm.set_weights([mean, variance, *[np.zeros(w.shape, w.dtype) for w in norm.weights[2:]]])  # (count)
    norm.finalize_state()  # Normalization reads its weights into constants here
    return y


def _residual(k, layer, x, name):
    h = x
    for i, sub in enumerate(layer.layers):
        h = _layer(k, sub, h, f"{name}_f{i}")
    s = x if layer.projection is None else _layer(k, layer.projection, x, f"{name}_proj")
    return k.layers.Add(name=name, **F32)([h, s])


def _builders():
    """vecnn layer class -> builder (exact classes: a subclass may compute something else)."""
    from .. import layers as L

    act = lambda fn: lambda k, l, x, name: k.layers.Activation(fn, name=name, **F32)(x)
    return {
        L.Dense: _dense,
        L.Conv2D: _conv,
        L.MaxPool2D: _max_pool,
        L.AvgPool2D: _avg_pool,
        L.GlobalAvgPool2D: lambda k, l, x, name: k.layers.GlobalAveragePooling2D(name=name, **CF)(x),
        L.Flatten: lambda k, l, x, name: k.layers.Flatten(data_format="channels_last", name=name, **F32)(x),
        L.Dropout: lambda k, l, x, name: k.layers.Dropout(l.rate, name=name, **F32)(x),
        L.BatchNorm1D: _batch_norm,
        L.BatchNorm2D: _batch_norm,
        L.ReLU: lambda k, l, x, name: k.layers.ReLU(name=name, **F32)(x),
        L.LeakyReLU: lambda k, l, x, name: k.layers.LeakyReLU(negative_slope=l.negative_slope, name=name, **F32)(x),
        L.Sigmoid: act("sigmoid"),
        L.Tanh: act("tanh"),
        L.GELU: _gelu,
        L.Softmax: lambda k, l, x, name: k.layers.Softmax(axis=-1, name=name, **F32)(x),
        L.Residual: _residual,
        L.Standardize: _standardize,
    }


def _layer(k, layer, x, name):
    builders = _builders()
    build = builders.get(type(layer))
    if build is None:
        known = ", ".join(sorted(c.__name__ for c in builders))
        raise ValueError(
            f"to_keras: {name} {layer!r} ({type(layer).__module__}.{type(layer).__qualname__}) has no Keras "
            f"translation; supported layers: {known}"
        )
    return build(k, layer, x, name)


def to_keras(model, input_shape=None):
    """An equivalent Keras 3 ``keras.Model`` (functional) holding copies of the weights.

    It takes ``(n, *input_shape)`` float32 in vecnn's layout (NCHW images) and, in inference
    (``training=False``), gives ``model.predict``'s outputs. ``input_shape``: the per-sample
    shape, when the model does not know it (``model.metadata["input_shape"]``). A layer with no
    Keras translation is a ``ValueError`` naming it."""
    keras = import_keras()
    shape = sample_shape(model, input_shape, where="to_keras")
    with warnings.catch_warnings():
        # Keras' PyTorch backend reads weights back with np.array(tensor) (set_weights checks the
        # shapes), which NumPy 2 flags for torch's __array__: harmless, and not the user's to fix
        warnings.filterwarnings("ignore", message=_TORCH_ARRAY_WARNING, category=DeprecationWarning)
        inputs = keras.Input(shape=shape, name="input", dtype="float32")
        x = inputs
        for i, layer in enumerate(model.layers):
            x = _layer(keras, layer, x, f"layer{i}_{type(layer).__name__.lower()}")
        return keras.Model(inputs, x, name="vecnn")


def save(kmodel, path) -> None:
    """Save a Keras model (``to_keras``'s) as a ``.keras`` file, atomically: Keras writes it
    in a temporary folder, then it is copied into place with ``vecnn.files.atomic_open``."""
    from ..files import atomic_open

    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"save: expected a file path, received {path!r}")
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: a Keras model file must end in .keras (Keras 3's zip format)")
    with tempfile.TemporaryDirectory(prefix="vecnn-keras-") as tmp:
        staged = Path(tmp) / "model.keras"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_TORCH_ARRAY_WARNING, category=DeprecationWarning)
            kmodel.save(staged)
        with atomic_open(path) as f, open(staged, "rb") as src:
            shutil.copyfileobj(src, f)


def export(model, path, input_shape=None):
    """``save(to_keras(model, input_shape), path)``; returns the Keras model."""
    kmodel = to_keras(model, input_shape)
    save(kmodel, path)
    return kmodel
