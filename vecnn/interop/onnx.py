"""ONNX export: a vecnn model as an ONNX graph, built with the ``onnx`` package alone (no torch).

Every layer becomes the ONNX operators that compute what its ``forward(x, training=False)``
computes: Dense is ``Gemm`` (vecnn's ``W`` is ``(in, out)``: ``transB=0``), Conv2D is ``Conv``
(weights ``(out, in, kh, kw)`` unchanged), BatchNorm is ``BatchNormalization`` with the running
statistics (``affine=False``: scale 1 and bias 0; ``momentum=None``, the cumulative average, leaves
the training-only ``momentum`` attribute at its default; ``track_running_stats=False``, batch
statistics in inference too, is refused: not a static inference graph), Dropout is nothing at
all (inference), GELU is ``x * 0.5 * (1 + Erf(x / sqrt 2))`` (vecnn's exact form; the tanh
form with ``Tanh``), Standardize is ``(x - mean) * (1 / std)`` with its stored statistics, a
Residual block is its layers inline plus an ``Add`` of the shortcut. A layer with no such
translation (a user's own) is a ``ValueError`` naming it.

The file:

- input ``"input"``, float32, shape ``("batch", *input_shape)``: the batch axis is dynamic, so
  one file serves batch 1 and batch 1000; output ``"logits"`` (``"probabilities"`` when the
  model ends in a Softmax, ``"outputs"`` for a regression model).
- opset ``DEFAULT_OPSET`` (17) with IR version 8, the IR version of the onnx release that
  introduced opset 17 (onnx 1.12). Left alone, the onnx package stamps its own newest IR
  version (14 for onnx 1.23), which older runtimes refuse ("Unsupported model IR version");
  opset 17 / IR 8 is read by every onnxruntime since 1.13 (2022) and by TensorRT 8.6+, OpenCV's
  dnn and most converters, and holds every operator needed here. Those operators are unchanged
  in meaning from opset 13 on, so ``opset=13`` up to the installed onnx's newest may be asked
  for, the IR version then being the lowest that opset needs (onnxruntime 1.32 with onnx 1.23:
  opsets 13 to 28, IR 7 to 14, all run and give the same outputs).
- metadata (``metadata_props``): ``vecnn_version``, ``output`` (what the output means),
  ``input_shape``, ``class_names`` (JSON, when the model has them), ``loss`` and the model's
  ``metadata`` as JSON.

>>> from vecnn.interop.onnx import export
>>> export(model, "model.onnx")                    # doctest: +SKIP
>>> import onnxruntime as ort                      # doctest: +SKIP
>>> ort.InferenceSession("model.onnx").run(None, {"input": X})[0]   # == model.predict(X)
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

#: the opset written when none is asked for (see the module docstring for why)
DEFAULT_OPSET = 17
#: the oldest opset whose operators mean what this exporter writes (Softmax over one axis)
MIN_OPSET = 13
INPUT_NAME = "input"


def import_onnx():
    """The ``onnx`` package, or an ImportError naming the extra that brings it."""
    try:
        import onnx
    except ImportError:
        raise ImportError("vecnn.interop.onnx needs the onnx package: pip install 'vecnn[onnx]'") from None
    return onnx


# -- what the model takes and gives ------------------------------------------------------------
def sample_shape(model, input_shape=None, where="export") -> tuple:
    """The per-sample input shape to export for: ``input_shape`` when given, else the shape the
    model was trained on (``model.metadata["input_shape"]``), else what its first layer
    accepts (``None`` for a size left open, e.g. an image's H and W). Checked against every
    layer when fully known. ``ValueError`` when nothing says the rank of the input."""
    if input_shape is None:
        input_shape = model.metadata.get("input_shape") or model.input_shape
        if input_shape is None:
            raise ValueError(
                f"{where}: the model does not say what input it takes (its first layer "
                f"{type(model.layers[0]).__name__} accepts any shape); pass input_shape=(...), "
                f"the per-sample shape without the batch axis"
            )
    elif not (
        isinstance(input_shape, (tuple, list))
        and input_shape
        and all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1 for d in input_shape)
    ):
        raise ValueError(
            f"{where}: expected input_shape to be a per-sample shape of positive sizes such as "
            f"(1, 28, 28), received input_shape={input_shape!r}"
        )
    shape = tuple(None if d is None else int(d) for d in input_shape)
    if all(d is not None for d in shape):
        model.shapes(shape)  # ValueError naming the first layer that does not take it
    return shape


def output_dims(model, shape) -> list:
    """``["batch", *per-sample output shape]``; with sizes left open in ``shape`` (an image's H
    and W), the output sizes that depend on them are named ``"out1"``, ``"out2"``, ...: found by
    running the shape rules at two sizes. ``ValueError`` when a layer needs the open size fixed
    (a Dense after a Flatten)."""
    if all(d is not None for d in shape):
        return ["batch", *model.shapes(shape)[-1]]
    try:
        a, b = (model.shapes(tuple(size if d is None else d for d in shape))[-1] for size in (256, 257))
    except ValueError as e:
        open_dims = ", ".join(str(k + 1) for k, d in enumerate(shape) if d is None)
        raise ValueError(
            f"export: the model leaves input size(s) {open_dims} open, and a layer needs them fixed ({e}); "
            f"pass input_shape=(...), the per-sample shape without the batch axis"
        ) from None
    return ["batch", *(x if x == y else f"out{k + 1}" for k, (x, y) in enumerate(zip(a, b)))]


def output_meaning(model) -> str:
    """What the model's outputs are: ``"probabilities"`` after a final Softmax, ``"outputs"``
    for a regression loss, else ``"logits"`` (classifiers, and models not trained yet)."""
    from ..layers import Softmax
    from ..losses import BCEWithLogits, CrossEntropy

    if type(model.layers[-1]) is Softmax:
        return "probabilities"
    if model.loss is not None and not isinstance(model.loss, (CrossEntropy, BCEWithLogits)):
        return "outputs"
    return "logits"


def host(a) -> np.ndarray:
    """A parameter or state array as float32 NumPy (copied off the GPU when it lives there)."""
    from .. import ops

    return np.ascontiguousarray(ops.get(a).to_host(a), dtype=np.float32)


def check_opset(opset, where="export") -> int:
    """``opset`` checked (None: ``DEFAULT_OPSET``): from ``MIN_OPSET`` to the installed onnx's newest."""
    onnx = import_onnx()
    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        return DEFAULT_OPSET
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not MIN_OPSET <= opset <= newest:
        raise ValueError(
            f"{where}: expected opset to be an integer from {MIN_OPSET} to {newest} (the installed onnx's "
            f"newest), received opset={opset!r}"
        )
    return int(opset)


# -- the graph ---------------------------------------------------------------------------------
class _Graph:
    """Nodes and initializers in the order they are added, every tensor name unique."""

    def __init__(self, onnx) -> None:
        self.onnx = onnx
        self.nodes: list = []
        self.initializers: list = []
        self.names: set[str] = {INPUT_NAME}

    def _fresh(self, name: str) -> str:
        out, i = name, 1
        while out in self.names:
            i += 1
            out = f"{name}_{i}"
        self.names.add(out)
        return out

    def const(self, name: str, value) -> str:
        """An initializer holding ``value`` as float32; returns its name."""
        name = self._fresh(name)
        array = np.asarray(value, dtype=np.float32)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        """One node of ``op_type`` with one output; returns the output's name."""
        out = self._fresh(name)
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _dense(g, layer, x, name):
    inputs = [x, g.const(f"{name}.W", host(layer.params["W"]))]  # (in, out): X @ W
    if layer.bias:
        inputs.append(g.const(f"{name}.b", host(layer.params["b"])))
    return g.op("Gemm", inputs, name)


def _conv(g, layer, x, name):
    (ph, pw) = layer.padding
    inputs = [x, g.const(f"{name}.W", host(layer.params["W"]))]  # (O, C, kh, kw), as ONNX
    if layer.bias:
        inputs.append(g.const(f"{name}.b", host(layer.params["b"])))
    return g.op(
        "Conv",
        inputs,
        name,
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.stride),
        dilations=list(layer.dilation),
        pads=[ph, pw, ph, pw],  # (top, left, bottom, right)
    )


def _pool(op_type, **extra):
    def export(g, layer, x, name):
        (ph, pw) = layer.padding
        return g.op(
            op_type,
            [x],
            name,
            kernel_shape=list(layer.kernel_size),
            strides=list(layer.stride),
            pads=[ph, pw, ph, pw],
            **extra,
        )

    return export


def _global_avg_pool(g, layer, x, name):
    pooled = g.op("GlobalAveragePool", [x], f"{name}.pool")  # (N, C, 1, 1)
    return g.op("Flatten", [pooled], name, axis=1)  # (N, C)


def _batch_norm(g, layer, x, name):
    if not layer.track_running_stats:
        raise ValueError(
            f"export: {name} {layer!r} normalizes with each batch's own statistics in inference too "
            f"(track_running_stats=False): its output for a sample depends on the rest of its batch, which "
            f"an inference graph (BatchNormalization with running statistics) does not compute; train with "
            f"track_running_stats=True to export"
        )
    n = layer.num_features
    if layer.affine:
        scale, bias = host(layer.params["gamma"]), host(layer.params["beta"])
    else:  # affine=False: the layer computes xhat itself, as with gamma 1 and beta 0
        scale, bias = np.ones(n, np.float32), np.zeros(n, np.float32)
    stats = [
        g.const(f"{name}.gamma", scale),
        g.const(f"{name}.beta", bias),
        g.const(f"{name}.running_mean", host(layer.state["running_mean"])),
        g.const(f"{name}.running_var", host(layer.state["running_var"])),
    ]
    attrs = {"epsilon": layer.eps}
    if layer.momentum is not None:
        # ONNX's momentum weighs the old running value (Keras' convention), vecnn's the new batch's;
        # it only matters in training mode. momentum=None (a cumulative average) has no ONNX
        # counterpart: the attribute is left out (its default, 0.9), inference does not read it
        attrs["momentum"] = 1.0 - layer.momentum
    return g.op("BatchNormalization", [x, *stats], name, **attrs)


def _gelu(g, layer, x, name):
    if layer.approximate == "tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        x3 = g.op("Mul", [g.op("Mul", [x, x], f"{name}.x2"), x], f"{name}.x3")
        inner = g.op("Add", [x, g.op("Mul", [x3, g.const(f"{name}.c", 0.044715)], f"{name}.cx3")], f"{name}.sum")
        t = g.op("Tanh", [g.op("Mul", [inner, g.const(f"{name}.k", math.sqrt(2 / math.pi))], f"{name}.u")], f"{name}.t")
    else:  # x Phi(x) = x * 0.5 (1 + erf(x / sqrt 2)), as vecnn computes it
        t = g.op("Erf", [g.op("Div", [x, g.const(f"{name}.sqrt2", math.sqrt(2.0))], f"{name}.z")], f"{name}.erf")
    one_plus = g.op("Add", [t, g.const(f"{name}.one", 1.0)], f"{name}.1p")
    cdf = g.op("Mul", [one_plus, g.const(f"{name}.half", 0.5)], f"{name}.cdf")
    return g.op("Mul", [x, cdf], name)


def _standardize(g, layer, x, name):
    if not layer.adapted:
        raise ValueError(f"export: {layer!r} has no statistics yet; call adapt(X_train) before exporting")
    mean = host(layer.state["mean"])  # (*stats): broadcasts over the batch axis
    inv_std = 1 / host(layer.state["std"])  # float32, as the layer's forward computes it
    centered = g.op("Sub", [x, g.const(f"{name}.mean", mean)], f"{name}.centered")
    return g.op("Mul", [centered, g.const(f"{name}.inv_std", inv_std)], name)


def _residual(g, layer, x, name):
    h = x
    for i, sub in enumerate(layer.layers):
        h = _layer(g, sub, h, f"{name}.f{i}")
    s = x if layer.projection is None else _layer(g, layer.projection, x, f"{name}.proj")
    return g.op("Add", [h, s], name)


def _exporters():
    """vecnn layer class -> ``export(graph, layer, x, name) -> output name`` (exact classes: a
    subclass may compute something else)."""
    from .. import layers as L

    return {
        L.Dense: _dense,
        L.Conv2D: _conv,
        L.MaxPool2D: _pool("MaxPool"),  # padding counts as -inf, as in vecnn
        L.AvgPool2D: _pool("AveragePool", count_include_pad=1),  # zeros count in the mean, as in vecnn
        L.GlobalAvgPool2D: _global_avg_pool,
        L.Flatten: lambda g, l, x, name: g.op("Flatten", [x], name, axis=1),  # C, H, W order
        L.Dropout: lambda g, l, x, name: x,  # inference: the identity
        L.BatchNorm1D: _batch_norm,
        L.BatchNorm2D: _batch_norm,
        L.ReLU: lambda g, l, x, name: g.op("Relu", [x], name),
        L.LeakyReLU: lambda g, l, x, name: g.op("LeakyRelu", [x], name, alpha=l.negative_slope),
        L.Sigmoid: lambda g, l, x, name: g.op("Sigmoid", [x], name),
        L.Tanh: lambda g, l, x, name: g.op("Tanh", [x], name),
        L.GELU: _gelu,
        L.Softmax: lambda g, l, x, name: g.op("Softmax", [x], name, axis=-1),
        L.Residual: _residual,
        L.Standardize: _standardize,
    }


def _layer(g, layer, x, name):
    exporters = _exporters()
    export = exporters.get(type(layer))
    if export is None:
        known = ", ".join(sorted(c.__name__ for c in exporters))
        raise ValueError(
            f"export: {name} {layer!r} ({type(layer).__module__}.{type(layer).__qualname__}) has no ONNX "
            f"translation; supported layers: {known}"
        )
    return export(g, layer, x, name)


# -- the model ---------------------------------------------------------------------------------
def to_onnx(model, opset=None, input_shape=None):
    """The ``onnx.ModelProto`` of ``model`` (checked with ``onnx.checker``); see the module
    docstring for the names, the opset and the metadata."""
    import vecnn

    onnx = import_onnx()
    opset = check_opset(opset)
    shape = sample_shape(model, input_shape)
    g = _Graph(onnx)
    x = INPUT_NAME
    for i, layer in enumerate(model.layers):
        x = _layer(g, layer, x, f"layer{i}.{type(layer).__name__}")
    meaning = output_meaning(model)
    if g.nodes and g.nodes[-1].output[0] == x:  # the last node writes the graph's output
        g.nodes[-1].output[0] = g.nodes[-1].name = meaning
    else:  # only identities (Dropout) at the end: the output needs a node of its own
        g.op("Identity", [x], meaning)
    out_shape = output_dims(model, shape)
    in_dims = ["batch", *(d if d is not None else f"dim{k + 1}" for k, d in enumerate(shape))]
    graph = onnx.helper.make_graph(
        g.nodes,
        "vecnn",
        [onnx.helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, in_dims)],
        [onnx.helper.make_tensor_value_info(meaning, onnx.TensorProto.FLOAT, out_shape)],
        initializer=g.initializers,
    )
    opset_id = onnx.helper.make_opsetid("", opset)
    proto = onnx.helper.make_model(
        graph,
        opset_imports=[opset_id],
        ir_version=onnx.helper.find_min_ir_version_for([opset_id]),
        producer_name="vecnn",
        producer_version=vecnn.__version__,
        doc_string=f"vecnn model: {', '.join(type(l).__name__ for l in model.layers)}",
    )
    meta = {
        "vecnn_version": vecnn.__version__,
        "output": meaning,
        "input_shape": json.dumps(list(shape)),
        "vecnn_metadata": json.dumps(model.metadata, default=str, sort_keys=True),
    }
    if model.class_names is not None:
        meta["class_names"] = json.dumps(list(model.class_names))
    if model.loss is not None:
        meta["loss"] = type(model.loss).registered_name
    onnx.helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    return proto


def export(model, path, opset=None, input_shape=None):
    """Write ``model`` to the ONNX file ``path`` (atomically: the file appears whole or not at
    all); returns the ``onnx.ModelProto``. ``opset``: default ``DEFAULT_OPSET``;
    ``input_shape``: the per-sample shape, when the model does not know it."""
    from ..files import atomic_write

    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"export: expected a file path, received {path!r}")
    proto = to_onnx(model, opset=opset, input_shape=input_shape)
    atomic_write(path, proto.SerializeToString())
    return proto
