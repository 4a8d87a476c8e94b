"""Keras 3 export: a vecnn model as an equivalent ``keras.Model`` (functional API), same weights.

The Keras model takes the input vecnn takes, NCHW images included, and gives the same outputs.
Its image layers compute in ``data_format`` (default ``"channels_last"``, the layout TensorFlow's
CPU kernels and TFLite take): the NCHW input is permuted to NHWC before the first image layer
and back to NCHW where vecnn's axis order matters (a Flatten, a Softmax, a per-feature
Standardize, the output); ``data_format="channels_first"`` permutes nothing. Where Keras has no
layer with vecnn's exact semantics, built-in layers compose it (never a ``Lambda``, so the
saved ``.keras`` file loads with ``safe_mode`` and without vecnn):

- Conv2D padding is a ``ZeroPadding2D`` before a ``"valid"`` convolution; Keras refuses a
  stride with a dilation, so a dilated strided convolution runs at stride 1 and a
  ``MaxPooling2D(pool_size=1, strides=stride)`` keeps every stride-th output (a subsampling).
  The kernel is ``W.transpose(2, 3, 1, 0)``: Keras' ``(kh, kw, in, out)`` in either layout.
- MaxPool2D padding counts as -inf in vecnn; Keras pads only with zeros, so the border is
  made of copies of the edge rows and columns (``Cropping2D`` + ``Concatenate``): a window
  that reaches into the border always holds the edge pixel it copies, so its maximum is the
  maximum over the real pixels, exactly. AvgPool2D padding counts zeros, as ``ZeroPadding2D``.
- Flatten: on NCHW, ``Flatten(data_format="channels_last")``, a plain row-major reshape:
  vecnn's (C, H, W) order (Keras' ``"channels_first"`` Flatten would transpose first).
- BatchNorm: ``BatchNormalization`` over the channel axis, ``momentum = 1 - vecnn's momentum``
  (vecnn, like PyTorch, weighs the new batch by ``momentum``; Keras weighs the running value).
  ``affine=False``: ``center=False, scale=False``, the moving statistics its only weights.
  ``momentum=None`` (vecnn's cumulative average; Keras has none): Keras' default momentum
  ``CUMULATIVE_MOMENTUM`` (0.99), which only further training in Keras reads: the moving
  statistics are copied, so inference outputs are the same. ``track_running_stats=False``
  (batch statistics in inference too) is refused: Keras normalizes with batch statistics only
  in training mode, so no Keras model computes it in inference.
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
from typing import Any, NamedTuple

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


# -- one builder per vecnn layer: (build, layer, x, name) -> the output ---------------------------
F32 = {"dtype": "float32"}
CF, CL = "channels_first", "channels_last"
FORMATS = (CL, CF)


class _T(NamedTuple):
    """A Keras tensor and its memory layout: ``"channels_first"`` is vecnn's own (NCHW, and any
    tensor that is not an image); ``"channels_last"`` only ever holds an NHWC image."""

    t: Any
    fmt: str


class _Build:
    """The Keras module and the layout the image layers run in (``data_format``); a tensor is
    permuted only where a layer needs another layout than the one it arrives in."""

    def __init__(self, keras, data_format: str) -> None:
        self.k, self.fmt = keras, data_format

    def to(self, x: _T, fmt: str, name: str) -> _T:
        if x.fmt == fmt or len(x.t.shape) != 4:
            return x
        perm, tag = ((2, 3, 1), "nhwc") if fmt == CL else ((3, 1, 2), "nchw")
        return _T(self.k.layers.Permute(perm, name=f"{name}_{tag}", **F32)(x.t), fmt)

    def image(self, x: _T, name: str) -> _T:
        """``x`` in the image layers' layout (4-D tensors; others as they are)."""
        return self.to(x, self.fmt, name)

    def nchw(self, x: _T, name: str) -> _T:
        """``x`` in vecnn's layout, for layers whose meaning depends on the axis order."""
        return self.to(x, CF, name)

    def same(self, x: _T, keras_layer) -> _T:
        """An elementwise layer: any layout will do."""
        return _T(keras_layer(x.t), x.fmt)


def _spatial_axes(fmt: str) -> tuple[int, int]:
    return (2, 3) if fmt == CF else (1, 2)


def _dense(b, layer, x, name):
    d = b.k.layers.Dense(layer.out_features, use_bias=layer.bias, name=name, **F32)
    y = d(x.t)  # a (n, features) input: no layout to mind
    d.set_weights([host(layer.params["W"])] + ([host(layer.params["b"])] if layer.bias else []))  # W: (in, out)
    return _T(y, CF)


def _zero_pad(b, x, padding, name):
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return b.same(x, b.k.layers.ZeroPadding2D(((ph, ph), (pw, pw)), data_format=x.fmt, name=f"{name}_pad", **F32))


def _conv(b, layer, x, name):
    x = _zero_pad(b, b.image(x, name), layer.padding, name)
    subsample = layer.stride != (1, 1) and layer.dilation != (1, 1)  # Keras refuses both at once
    conv = b.k.layers.Conv2D(
        layer.out_channels,
        layer.kernel_size,
        strides=(1, 1) if subsample else layer.stride,
        dilation_rate=layer.dilation,
        padding="valid",
        use_bias=layer.bias,
        data_format=x.fmt,
        name=name,
        **F32,
    )
    y = b.same(x, conv)
    W = host(layer.params["W"]).transpose(2, 3, 1, 0)  # (O, C, kh, kw) -> Keras' (kh, kw, C, O), either layout
    conv.set_weights([W] + ([host(layer.params["b"])] if layer.bias else []))
    if subsample:  # every stride-th output of the stride-1 convolution
        y = b.same(y, b.k.layers.MaxPooling2D(1, strides=layer.stride, data_format=y.fmt, name=f"{name}_stride", **F32))
    return y


def _edge_pad(b, x, padding, name):
    """``x`` with a border of copies of its edge rows and columns."""
    axes = _spatial_axes(x.fmt)
    H, W = (x.t.shape[a] for a in axes)
    if (padding[0] and H is None) or (padding[1] and W is None):
        raise ValueError(f"to_keras: {name}: a padded MaxPool2D needs the image size; pass input_shape=(C, H, W)")
    crop = b.k.layers.Cropping2D
    sides = (lambda lo, hi: ((lo, hi), (0, 0)), lambda lo, hi: ((0, 0), (lo, hi)))
    for axis, p, size, crops in zip(axes, padding, (H, W), sides):
        if p:
            first = crop(crops(0, size - 1), data_format=x.fmt, name=f"{name}_edge{axis}a", **F32)(x.t)
            last = crop(crops(size - 1, 0), data_format=x.fmt, name=f"{name}_edge{axis}b", **F32)(x.t)
            cat = b.k.layers.Concatenate(axis=axis, name=f"{name}_pad{axis}", **F32)
            x = _T(cat([first] * p + [x.t] + [last] * p), x.fmt)
    return x


def _max_pool(b, layer, x, name):
    x = _edge_pad(b, b.image(x, name), layer.padding, name)  # vecnn pads with -inf: edge copies, same maxima
    pool = b.k.layers.MaxPooling2D(layer.kernel_size, strides=layer.stride, data_format=x.fmt, name=name, **F32)
    return b.same(x, pool)


def _avg_pool(b, layer, x, name):
    x = _zero_pad(b, b.image(x, name), layer.padding, name)  # zeros count in the mean, as in vecnn
    pool = b.k.layers.AveragePooling2D(layer.kernel_size, strides=layer.stride, data_format=x.fmt, name=name, **F32)
    return b.same(x, pool)


def _global_avg_pool(b, layer, x, name):
    x = b.image(x, name)
    return _T(b.k.layers.GlobalAveragePooling2D(data_format=x.fmt, name=name, **F32)(x.t), CF)  # (n, C)


def _flatten(b, layer, x, name):
    x = b.nchw(x, name)  # vecnn flattens in (C, H, W) order; Keras' "channels_last" Flatten is a plain reshape
    return _T(b.k.layers.Flatten(data_format=CL, name=name, **F32)(x.t), CF)


def _channel_axis(x: _T) -> int:
    return -1 if x.fmt == CL else 1


#: Keras' momentum for a vecnn BatchNorm with ``momentum=None`` (a cumulative average, which Keras
#: lacks): Keras' own default. Only further training in Keras reads it; inference does not.
CUMULATIVE_MOMENTUM = 0.99


def _batch_norm(b, layer, x, name):
    if not layer.track_running_stats:
        raise ValueError(
            f"to_keras: {name} {layer!r} normalizes with each batch's own statistics in inference too "
            f"(track_running_stats=False): its output for a sample depends on the rest of its batch, which "
            f"Keras' BatchNormalization does only in training; train with track_running_stats=True to export"
        )
    x = b.image(x, name)
    # vecnn (like PyTorch) weighs the new batch by momentum, Keras the old value
    momentum = CUMULATIVE_MOMENTUM if layer.momentum is None else 1.0 - layer.momentum
    bn = b.k.layers.BatchNormalization(
        axis=_channel_axis(x),
        epsilon=layer.eps,
        momentum=momentum,
        center=layer.affine,  # affine=False: no beta nor gamma, the output is xhat itself
        scale=layer.affine,
        name=name,
        **F32,
    )
    y = b.same(x, bn)
    bn.set_weights(
        [host(layer.params[p]) for p in ("gamma", "beta") if layer.affine]
        + [host(layer.state[s]) for s in ("running_mean", "running_var")]
    )
    return y


def _gelu(b, layer, x, name):
    L = b.k.layers
    if layer.approximate == "none":
        return b.same(x, L.Activation("gelu", name=name, **F32))  # Keras' default: the exact erf form
    # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), elementwise: any layout
    t = x.t
    x3 = L.Multiply(name=f"{name}_x3", **F32)([t, t, t])
    inner = L.Add(name=f"{name}_sum", **F32)([t, L.Rescaling(0.044715, name=f"{name}_c", **F32)(x3)])
    tanh = L.Activation("tanh", name=f"{name}_tanh", **F32)(
        L.Rescaling(math.sqrt(2 / math.pi), name=f"{name}_k", **F32)(inner)
    )
    cdf = L.Rescaling(0.5, offset=0.5, name=f"{name}_cdf", **F32)(tanh)
    return _T(L.Multiply(name=name, **F32)([t, cdf]), x.fmt)


def _standardize(b, layer, x, name):
    if not layer.adapted:
        raise ValueError(f"to_keras: {layer!r} has no statistics yet; call adapt(X_train) before exporting")
    std = host(layer.state["std"])
    epsilon = b.k.config.epsilon()
    if std.min() < epsilon:  # Keras divides by max(sqrt(variance), epsilon)
        raise ValueError(
            f"to_keras: {layer!r} has a std of {std.min():.3g}, below Keras' epsilon {epsilon:g}, "
            f"which Keras' Normalization would divide by instead"
        )
    if layer.per == "channel":
        x = b.image(x, name)
        axis: Any = _channel_axis(x)
    elif layer.per == "feature":
        x = b.nchw(x, name)  # the statistics are laid out as vecnn's samples are
        axis = tuple(range(1, len(x.t.shape)))
    else:
        axis = None  # one mean and std: any layout
    norm = b.k.layers.Normalization(axis=axis, name=name, **F32)
    y = b.same(x, norm)
    keep = [w.shape for w in norm.weights[:2]]  # (mean, variance) shapes Keras keeps
    mean = host(layer.state["mean"]).reshape(keep[0])
    variance = (std.astype(np.float64) ** 2).astype(np.float32).reshape(keep[1])
    norm.set_weights([mean, variance, *[np.zeros(w.shape, w.dtype) for w in norm.weights[2:]]])  # (count)
    norm.finalize_state()  # Normalization reads its weights into constants here
    return y


def _residual(b, layer, x, name):
    h = x
    for i, sub in enumerate(layer.layers):
        h = _layer(b, sub, h, f"{name}_f{i}")
    s = x if layer.projection is None else _layer(b, layer.projection, x, f"{name}_proj")
    if h.fmt != s.fmt:  # (images, one path permuted)
        h, s = b.image(h, f"{name}_h"), b.image(s, f"{name}_s")
    return _T(b.k.layers.Add(name=name, **F32)([h.t, s.t]), h.fmt)


def _builders():
    """vecnn layer class -> builder (exact classes: a subclass may compute something else)."""
    from .. import layers as L

    def elementwise(make):
        return lambda b, l, x, name: b.same(x, make(b.k.layers, l, name))

    return {
        L.Dense: _dense,
        L.Conv2D: _conv,
        L.MaxPool2D: _max_pool,
        L.AvgPool2D: _avg_pool,
        L.GlobalAvgPool2D: _global_avg_pool,
        L.Flatten: _flatten,
        L.Dropout: elementwise(lambda K, l, name: K.Dropout(l.rate, name=name, **F32)),
        L.BatchNorm1D: _batch_norm,
        L.BatchNorm2D: _batch_norm,
        L.ReLU: elementwise(lambda K, l, name: K.ReLU(name=name, **F32)),
        L.LeakyReLU: elementwise(lambda K, l, name: K.LeakyReLU(negative_slope=l.negative_slope, name=name, **F32)),
        L.Sigmoid: elementwise(lambda K, l, name: K.Activation("sigmoid", name=name, **F32)),
        L.Tanh: elementwise(lambda K, l, name: K.Activation("tanh", name=name, **F32)),
        L.GELU: _gelu,
        L.Softmax: lambda b, l, x, name: b.same(b.nchw(x, name), b.k.layers.Softmax(axis=-1, name=name, **F32)),
        L.Residual: _residual,
        L.Standardize: _standardize,
    }


def _layer(b, layer, x, name):
    builders = _builders()
    build = builders.get(type(layer))
    if build is None:
        known = ", ".join(sorted(c.__name__ for c in builders))
        raise ValueError(
            f"to_keras: {name} {layer!r} ({type(layer).__module__}.{type(layer).__qualname__}) has no Keras "
            f"translation; supported layers: {known}"
        )
    return build(b, layer, x, name)


def to_keras(model, input_shape=None, data_format="channels_last"):
    """An equivalent Keras 3 ``keras.Model`` (functional) holding copies of the weights.

    It takes ``(n, *input_shape)`` float32 in vecnn's layout (NCHW images) and, in inference
    (``training=False``), gives ``model.predict``'s outputs, in vecnn's layout too.

    Parameters
    ----------
    input_shape : tuple, optional
        The per-sample shape, when the model does not know it (``model.metadata["input_shape"]``).
    data_format : "channels_last" or "channels_first"
        The layout the image layers compute in. ``"channels_last"`` (default) permutes the
        NCHW input to NHWC once, before the first image layer, and back where vecnn's axis order
        matters (before a Flatten, a Softmax, a per-feature Standardize, and at the output):
        TensorFlow's CPU kernels and TFLite take NHWC only. ``"channels_first"`` runs every
        image layer on NCHW with no permutes (PyTorch's and JAX's native layout; GPUs).

    A layer with no Keras translation is a ``ValueError`` naming it."""
    if data_format not in FORMATS:
        raise ValueError(f"to_keras: expected data_format in {FORMATS}, received data_format={data_format!r}")
    keras = import_keras()
    shape = sample_shape(model, input_shape, where="to_keras")
    with warnings.catch_warnings():
        # Keras' PyTorch backend reads weights back with np.array(tensor) (set_weights checks the
        # shapes), which NumPy 2 flags for torch's __array__: harmless, and not the user's to fix
        warnings.filterwarnings("ignore", message=_TORCH_ARRAY_WARNING, category=DeprecationWarning)
        b = _Build(keras, data_format)
        inputs = keras.Input(shape=shape, name="input", dtype="float32")
        x = _T(inputs, CF)
        for i, layer in enumerate(model.layers):
            x = _layer(b, layer, x, f"layer{i}_{type(layer).__name__.lower()}")
        return keras.Model(inputs, b.nchw(x, "output").t, name="vecnn")


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


def export(model, path, input_shape=None, data_format="channels_last"):
    """``save(to_keras(model, input_shape, data_format), path)``; returns the Keras model."""
    kmodel = to_keras(model, input_shape, data_format)
    save(kmodel, path)
    return kmodel
