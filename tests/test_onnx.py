"""ONNX export: onnx.checker accepts the file and onnxruntime (CPU) gives model.predict's outputs.

The reference is vecnn's own ``predict``; onnxruntime computes the exported graph with its own
kernels (Gemm, Conv, BatchNormalization, Erf, ...), so a wrong weight layout, padding, flatten
order or statistic shows as a mismatch.
"""

import json
import sys

import numpy as np
import pytest
from export_cases import (
    BATCH_STATISTICS_MODELS,
    CASES,
    TOL,
    Double,
    MyReLU,
    assert_batchnorm_learned,
    batchnorm_options_model,
    cnn,
    data,
    mlp,
    prepared,
)

import vecnn as vn
from vecnn import layers as L
from vecnn.cli import main
from vecnn.interop.onnx import DEFAULT_OPSET, export, to_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def run(model_or_path, X):
    """onnxruntime's outputs for ``X`` (a ModelProto or a file path)."""
    source = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": X})[0]


@pytest.mark.parametrize("make", [mlp, cnn])
def test_one_file_serves_batch_1_and_7(make, rng, tmp_path):
    model, X = make(rng)
    assert_batchnorm_learned(model)
    path = tmp_path / "model.onnx"
    export(model, path)
    onnx.checker.check_model(str(path))
    loaded = onnx.load(str(path))
    dims = loaded.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == list(X.shape[1:])
    assert loaded.graph.output[0].name == "logits"
    for n in (1, 7):
        np.testing.assert_allclose(run(path, X[:n]), model.predict(X[:n]), **TOL)


@pytest.mark.parametrize("make, shape", CASES)
def test_each_layer(make, shape, rng):
    model = prepared(make(), shape, rng)
    X = data(rng, 3, shape)
    np.testing.assert_allclose(run(to_onnx(model), X), model.predict(X), **TOL)


@pytest.mark.parametrize("preset", ["mlp", "cnn", "resnet"])
def test_presets(preset, rng):
    """The CLI's architectures, BatchNorm statistics made non-trivial (the ResNet nests residual
    blocks with 1x1 projections)."""
    model = vn.presets.build(preset, (1, 8, 8), 5)
    model = prepared(model.layers, (1, 8, 8), rng)
    X = data(rng, 4, (1, 8, 8))
    np.testing.assert_allclose(run(to_onnx(model), X), model.predict(X), **TOL)


def test_opsets_and_metadata(rng):
    model, X = cnn(rng)
    model.class_names = ["cat", "dog", "émeu", "yak"]
    proto = to_onnx(model)
    opset = {o.domain: o.version for o in proto.opset_import}[""]
    assert (opset, proto.ir_version) == (DEFAULT_OPSET, 8)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["vecnn_version"] == vn.__version__
    assert json.loads(props["class_names"]) == model.class_names
    assert json.loads(props["input_shape"]) == [2, 8, 8]
    assert props["loss"] == "cross_entropy" and props["output"] == "logits"
    for other in (13, 21):
        again = to_onnx(model, opset=other)
        assert {o.domain: o.version for o in again.opset_import}[""] == other
        np.testing.assert_allclose(run(again, X[:5]), model.predict(X[:5]), **TOL)
    with pytest.raises(ValueError, match="opset"):
        to_onnx(model, opset=12)
    with pytest.raises(ValueError, match="opset"):
        to_onnx(model, opset="17")


def test_output_names(rng):
    probs = prepared([L.Dense(4, 3), L.Softmax()], (4,), rng)
    assert to_onnx(probs).graph.output[0].name == "probabilities"
    X = rng.standard_normal((6, 4)).astype(np.float32)
    regression = vn.Sequential([L.Dense(4, 2), L.Dropout(0.1)], seed=0)
    regression.fit(X, X[:, :2], loss="mse", epochs=1, verbose=0)
    proto = to_onnx(regression)
    assert proto.graph.output[0].name == "outputs"  # the final Dropout: an Identity node
    np.testing.assert_allclose(run(proto, X), regression.predict(X), **TOL)


# -- BatchNorm's PyTorch options -------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"affine": False}, id="affine-false"),
        pytest.param({"momentum": None}, id="momentum-none"),
        pytest.param({"affine": False, "momentum": None, "eps": 1e-3}, id="affine-false-momentum-none"),
    ],
)
def test_batchnorm_options(options, rng):
    model, X = batchnorm_options_model(rng, **options)
    bns = [l for l in model.layers if isinstance(l, (L.BatchNorm1D, L.BatchNorm2D))]
    if options.get("momentum", 0.1) is None:
        for bn in bns:  # 3 batches an epoch, 2 epochs: the cumulative average of 6 batches
            assert bn.state["num_batches_tracked"][0] == 6
    proto = to_onnx(model)
    nodes = [n for n in proto.graph.node if n.op_type == "BatchNormalization"]
    assert len(nodes) == 2
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node, bn in zip(nodes, bns):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["epsilon"] == pytest.approx(bn.eps)
        if bn.momentum is None:
            assert "momentum" not in attrs
        else:
            assert attrs["momentum"] == pytest.approx(1 - bn.momentum)
        scale, bias, mean, var = (consts[i] for i in node.input[1:])
        if not bn.affine:
            np.testing.assert_array_equal(scale, np.ones(bn.num_features, np.float32))
            np.testing.assert_array_equal(bias, np.zeros(bn.num_features, np.float32))
        np.testing.assert_array_equal(mean, bn.state["running_mean"])
        np.testing.assert_array_equal(var, bn.state["running_var"])
    for n in (1, 7):
        np.testing.assert_allclose(run(proto, X[:n]), model.predict(X[:n]), **TOL)


@pytest.mark.parametrize(
    "case, where",
    [
        ("1d", r"layer1\.BatchNorm1D BatchNorm1D\(num_features=4"),
        ("2d-in-residual", r"layer1\.Residual\.f0 BatchNorm2D\(num_features=2"),
    ],
)
def test_batchnorm_batch_statistics_refused(case, where, tmp_path):
    """track_running_stats=False: an output depends on the rest of its batch (not a static graph)."""
    make, shape = BATCH_STATISTICS_MODELS[case]
    model = vn.Sequential(make(), seed=0)
    path = tmp_path / "m.onnx"
    with pytest.raises(ValueError, match=rf"{where}.*track_running_stats=False.*rest of its batch"):
        export(model, path, input_shape=shape)
    assert not path.exists()


@pytest.mark.parametrize("layer, name", [(Double, "Double"), (MyReLU, "MyReLU")])
def test_refuses_a_layer_it_cannot_export(layer, name, tmp_path):
    model = vn.Sequential([L.Dense(3, 3), layer()], seed=0)
    path = tmp_path / "m.onnx"
    with pytest.raises(ValueError, match=rf"layer1\.{name}.*has no ONNX translation"):
        export(model, path)
    assert not path.exists()


def test_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="adapt"):
        to_onnx(vn.Sequential([L.Standardize(), L.Dense(3, 2)]), input_shape=(3,))
    with pytest.raises(ValueError, match="input_shape"):
        to_onnx(vn.Sequential([L.ReLU()]))  # nothing says what it takes
    with pytest.raises(ValueError, match="input_shape"):
        to_onnx(vn.Sequential([L.Dense(3, 2)]), input_shape=(0,))
    with pytest.raises(ValueError, match=r"expected input of shape \(n, 3\)"):
        to_onnx(vn.Sequential([L.Dense(3, 2)]), input_shape=(4,))
    with pytest.raises(ValueError, match="not a regular file"):
        export(vn.Sequential([L.Dense(3, 2)]), tmp_path)


def test_open_image_size(rng):
    """A convolutional model that never saw data leaves H and W open in the file."""
    model = vn.Sequential([L.Conv2D(1, 2, 3, padding=1), L.ReLU(), L.GlobalAvgPool2D(), L.Dense(2, 3)], seed=0)
    proto = to_onnx(model)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 1, "dim2", "dim3"]
    assert [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == ["batch", 3]
    for hw in ((5, 5), (9, 4)):
        X = rng.standard_normal((2, 1, *hw)).astype(np.float32)
        np.testing.assert_allclose(run(proto, X), model.predict(X), **TOL)
    fully_conv = to_onnx(vn.Sequential([L.Conv2D(1, 2, 3, stride=2)], seed=0))
    dims = fully_conv.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 2, "out2", "out3"]
    with pytest.raises(ValueError, match="input_shape"):  # a Dense after a Flatten needs H and W
        to_onnx(vn.Sequential([L.Conv2D(1, 2, 3), L.Flatten(), L.Dense(18, 2)], seed=0))


def test_missing_onnx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'vecnn\[onnx\]'"):
        to_onnx(vn.Sequential([L.Dense(3, 2)]))


# -- the command line ---------------------------------------------------------------------------
def test_cli_export_onnx(rng, tmp_path, capsys):
    model, X = cnn(rng)
    model.save(tmp_path / "m.vecnn")
    out = tmp_path / "sub" / "m.onnx"
    assert main(["export", str(tmp_path / "m.vecnn"), "--onnx", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    onnx.checker.check_model(str(out))
    for n in (1, 7):
        np.testing.assert_allclose(run(out, X[:n]), model.predict(X[:n]), **TOL)
    assert main(["export", str(tmp_path / "m.vecnn"), "--onnx", str(out), "--opset", "13"]) == 0
    assert {o.domain: o.version for o in onnx.load(str(out)).opset_import}[""] == 13


def test_cli_export_errors(rng, tmp_path, capsys, monkeypatch):
    model = prepared([L.Dense(3, 2)], (3,), rng)
    model.save(tmp_path / "m.vecnn")
    m = str(tmp_path / "m.vecnn")

    def fails(*argv, says):
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err, err

    fails(m, says="give --onnx OUT.onnx and/or --keras OUT.keras")
    fails(m, "--onnx", str(tmp_path / "x.onnx"), "--opset", "99", says="--opset")
    fails(m, "--keras", str(tmp_path / "x.h5"), says="ending in .keras")
    fails(m, "--onnx", str(tmp_path), says="not a regular file")
    fails(str(tmp_path / "none.vecnn"), "--onnx", str(tmp_path / "x.onnx"), says="none.vecnn")
    (tmp_path / "file").write_text("")
    fails(m, "--onnx", str(tmp_path / "file" / "x.onnx"), says="x.onnx")  # under a file: unwritable
    monkeypatch.setitem(sys.modules, "onnx", None)
    fails(m, "--onnx", str(tmp_path / "x.onnx"), says="pip install 'vecnn[onnx]'")
    assert not (tmp_path / "x.onnx").exists()
