"""Keras 3 export: the Keras model takes vecnn's input layout and gives model.predict's outputs.

Keras takes its backend once, when first imported. ``import_keras`` (called below, before
anything here imports keras) keeps an already imported Keras and a set ``KERAS_BACKEND``;
otherwise, when the configured backend (TensorFlow by default) is not installed, it sets
``KERAS_BACKEND`` to JAX or PyTorch, whichever is. In CI that is PyTorch (the test extra brings
torch, not TensorFlow; Keras 3.15's NumPy backend needs JAX). A fresh interpreter is tested too
(``test_cli_in_a_fresh_process``), since in this process another test may have imported Keras.
"""

import json
import os
import subprocess
import sys
import zipfile

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
from vecnn.interop import keras as vkeras
from vecnn.interop.keras import import_keras, save, to_keras

try:
    keras = import_keras()
except ImportError as e:
    pytest.skip(f"Keras 3 with an installed backend is needed: {e}", allow_module_level=True)

# Keras' PyTorch backend converts tensors with np.array(tensor), which NumPy 2 flags (Keras' to fix)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def run(kmodel, X):
    return keras.ops.convert_to_numpy(kmodel(X, training=False))


FORMATS = ["channels_last", "channels_first"]


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("make", [mlp, cnn])
def test_same_outputs_and_saved_file_reloads(make, data_format, rng, tmp_path):
    model, X = make(rng)
    assert_batchnorm_learned(model)
    kmodel = to_keras(model, data_format=data_format)
    assert tuple(kmodel.input_shape) == (None, *X.shape[1:])  # vecnn's layout, NCHW for images
    for n in (1, 7):
        np.testing.assert_allclose(run(kmodel, X[:n]), model.predict(X[:n]), **TOL)
    path = tmp_path / "model.keras"
    save(kmodel, path)
    assert zipfile.is_zipfile(path)
    loaded = keras.saving.load_model(path)  # safe_mode: no Lambda, no custom objects
    for n in (1, 7):
        np.testing.assert_allclose(run(loaded, X[:n]), model.predict(X[:n]), **TOL)


KERAS_CASES = [
    *CASES,
    pytest.param(lambda: [L.MaxPool2D((3, 5), stride=(1, 2), padding=(1, 2))], (2, 5, 7), id="maxpool-pad-wide"),
]


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("make, shape", KERAS_CASES)
def test_each_layer(make, shape, data_format, rng):
    model = prepared(make(), shape, rng)
    X = data(rng, 3, shape)
    np.testing.assert_allclose(run(to_keras(model, data_format=data_format), X), model.predict(X), **TOL)


def test_channels_last_permutes_once(rng):
    """NHWC inside: one permute in after the input, one back before the Flatten, none between."""
    model, X = cnn(rng)
    permutes = [l for l in to_keras(model).layers if isinstance(l, keras.layers.Permute)]
    assert [p.dims for p in permutes] == [(2, 3, 1), (3, 1, 2)]
    assert not [l for l in to_keras(model, data_format="channels_first").layers if isinstance(l, keras.layers.Permute)]
    with pytest.raises(ValueError, match="data_format"):
        to_keras(model, data_format="NHWC")


@pytest.mark.parametrize("preset", ["mlp", "cnn", "resnet"])
def test_presets(preset, rng):
    """The CLI's architectures, BatchNorm statistics made non-trivial (the ResNet nests residual
    blocks with 1x1 projections)."""
    model = vn.presets.build(preset, (1, 8, 8), 5)
    model = prepared(model.layers, (1, 8, 8), rng)
    X = data(rng, 4, (1, 8, 8))
    np.testing.assert_allclose(run(to_keras(model), X), model.predict(X), **TOL)


def test_standardize_weights_survive_a_reload(rng, tmp_path):
    """Normalization keeps mean and variance as weights: the reloaded file must hold them."""
    model = prepared([L.Standardize(per="feature"), L.Flatten(), L.Dense(18, 2)], (2, 3, 3), rng)
    X = data(rng, 4, (2, 3, 3))
    save(to_keras(model), tmp_path / "s.keras")
    np.testing.assert_allclose(run(keras.saving.load_model(tmp_path / "s.keras"), X), model.predict(X), **TOL)


def test_batchnorm_settings_mapped(rng):
    model = prepared([L.BatchNorm1D(4, eps=1e-3, momentum=0.25)], (4,), rng)
    (bn,) = [l for l in to_keras(model).layers if isinstance(l, keras.layers.BatchNormalization)]
    # vecnn (like PyTorch) weighs the new batch by momentum, Keras the running value
    assert bn.momentum == pytest.approx(0.75) and bn.epsilon == pytest.approx(1e-3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_variance), model.layers[0].state["running_var"])


# -- BatchNorm's PyTorch options -------------------------------------------------------------------
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"affine": False}, id="affine-false"),
        pytest.param({"momentum": None}, id="momentum-none"),
        pytest.param({"affine": False, "momentum": None, "eps": 1e-3}, id="affine-false-momentum-none"),
    ],
)
def test_batchnorm_options(options, data_format, rng, tmp_path):
    model, X = batchnorm_options_model(rng, **options)
    bns = [l for l in model.layers if isinstance(l, (L.BatchNorm1D, L.BatchNorm2D))]
    if options.get("momentum", 0.1) is None:
        for bn in bns:  # 3 batches an epoch, 2 epochs: the cumulative average of 6 batches
            assert bn.state["num_batches_tracked"][0] == 6
    kmodel = to_keras(model, data_format=data_format)
    kbns = [l for l in kmodel.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(kbns) == 2
    for kbn, bn in zip(kbns, bns):
        assert kbn.center == kbn.scale == bn.affine
        assert len(kbn.weights) == (4 if bn.affine else 2)  # affine=False: the moving statistics alone
        expected = vkeras.CUMULATIVE_MOMENTUM if bn.momentum is None else 1 - bn.momentum
        assert kbn.momentum == pytest.approx(expected) and kbn.epsilon == pytest.approx(bn.eps)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(kbn.moving_mean), bn.state["running_mean"])
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(kbn.moving_variance), bn.state["running_var"])
    for n in (1, 7):
        np.testing.assert_allclose(run(kmodel, X[:n]), model.predict(X[:n]), **TOL)
    save(kmodel, tmp_path / "bn.keras")
    loaded = keras.saving.load_model(tmp_path / "bn.keras")
    np.testing.assert_allclose(run(loaded, X[:7]), model.predict(X[:7]), **TOL)


@pytest.mark.parametrize(
    "case, where",
    [
        ("1d", r"layer1_batchnorm1d BatchNorm1D\(num_features=4"),
        ("2d-in-residual", r"layer1_residual_f0 BatchNorm2D\(num_features=2"),
    ],
)
def test_batchnorm_batch_statistics_refused(case, where):
    """track_running_stats=False: Keras normalizes with batch statistics only in training mode."""
    make, shape = BATCH_STATISTICS_MODELS[case]
    model = vn.Sequential(make(), seed=0)
    with pytest.raises(ValueError, match=rf"{where}.*track_running_stats=False.*rest of its batch"):
        to_keras(model, input_shape=shape)


@pytest.mark.parametrize("layer, name", [(Double, "Double"), (MyReLU, "MyReLU")])
def test_refuses_a_layer_it_cannot_export(layer, name):
    model = vn.Sequential([L.Dense(3, 3), layer()], seed=0)
    with pytest.raises(ValueError, match=rf"layer1_{name.lower()}.*has no Keras translation"):
        to_keras(model)


def test_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="adapt"):
        to_keras(vn.Sequential([L.Standardize(), L.Dense(3, 2)]), input_shape=(3,))
    with pytest.raises(ValueError, match="input_shape"):
        to_keras(vn.Sequential([L.ReLU()]))  # nothing says what it takes
    with pytest.raises(ValueError, match="image size"):  # edge copies need H and W
        to_keras(vn.Sequential([L.Conv2D(1, 2, 3), L.MaxPool2D(3, 1, 1), L.GlobalAvgPool2D()]))
    kmodel = to_keras(vn.Sequential([L.Dense(3, 2)]))
    with pytest.raises(ValueError, match=r"\.keras"):
        save(kmodel, tmp_path / "m.h5")
    (tmp_path / "d.keras").mkdir()
    with pytest.raises(ValueError, match="not a regular file"):
        save(kmodel, tmp_path / "d.keras")


def test_open_image_size(rng):
    model = vn.Sequential([L.Conv2D(1, 2, 3, padding=1), L.ReLU(), L.GlobalAvgPool2D(), L.Dense(2, 3)], seed=0)
    kmodel = to_keras(model)
    for hw in ((5, 5), (9, 4)):
        X = rng.standard_normal((2, 1, *hw)).astype(np.float32)
        np.testing.assert_allclose(run(kmodel, X), model.predict(X), **TOL)


def test_configured_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert vkeras._configured_backend() == "tensorflow"  # Keras' default without a keras.json
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax", "floatx": "float32"}))
    assert vkeras._configured_backend() == "jax"
    assert import_keras() is keras  # already imported: used as it is


# -- the command line ---------------------------------------------------------------------------
def test_cli_export_keras_and_onnx(rng, tmp_path, capsys):
    model, X = cnn(rng)
    model.save(tmp_path / "m.vecnn")
    argv = ["export", str(tmp_path / "m.vecnn"), "--keras", str(tmp_path / "m.keras")]
    if vkeras._installed("onnx"):
        argv += ["--onnx", str(tmp_path / "m.onnx")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'm.keras'} (Keras {keras.__version__}" in out
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    for n in (1, 7):
        np.testing.assert_allclose(run(loaded, X[:n]), model.predict(X[:n]), **TOL)
    if vkeras._installed("onnx"):
        assert (tmp_path / "m.onnx").stat().st_size > 0


def test_cli_export_keras_errors(rng, tmp_path, capsys, monkeypatch):
    prepared([L.Dense(3, 2)], (3,), rng).save(tmp_path / "m.vecnn")
    m = str(tmp_path / "m.vecnn")

    def fails(*argv, says):
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err, err

    (tmp_path / "file").write_text("")
    fails(m, "--keras", str(tmp_path / "file" / "m.keras"), says="m.keras")  # under a file: unwritable
    fails(m, "--keras", str(tmp_path / "m.keras"), "--onnx", str(tmp_path / "m.keras"), says="the same file")
    # Keras refuses (a padded max pool needs the image size), ONNX would not: neither file is written
    open_size = vn.Sequential([L.Conv2D(1, 2, 3), L.MaxPool2D(3, 1, 1), L.GlobalAvgPool2D(), L.Dense(2, 2)], seed=0)
    open_size.save(tmp_path / "open.vecnn")
    o, k = tmp_path / "open.onnx", tmp_path / "open.keras"
    with_onnx = ["--onnx", str(o)] if vkeras._installed("onnx") else []
    fails(str(tmp_path / "open.vecnn"), *with_onnx, "--keras", str(k), says="needs the image size")
    assert not o.exists() and not k.exists()
    monkeypatch.setitem(sys.modules, "keras", None)  # import keras -> ImportError
    fails(m, "--keras", str(tmp_path / "m.keras"), says="pip install 'vecnn[keras]'")
    assert not (tmp_path / "m.keras").exists()


def test_cli_in_a_fresh_process(rng, tmp_path):
    """``vecnn export --keras`` in a new interpreter, no KERAS_BACKEND set, a keras.json naming
    TensorFlow (Keras' default): the backend chosen is one that is installed."""
    model, X = mlp(rng)
    model.save(tmp_path / "m.vecnn")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "keras.json").write_text(json.dumps({"backend": "tensorflow"}))
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [sys.executable, "-m", "vecnn.cli", "export", str(tmp_path / "m.vecnn"), "--keras", str(tmp_path / "m.keras")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    backend = "tensorflow" if vkeras._installed("tensorflow") else ("jax" if vkeras._installed("jax") else "torch")
    assert f"built on the {backend} backend" in done.stdout
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(run(loaded, X[:5]), model.predict(X[:5]), **TOL)
