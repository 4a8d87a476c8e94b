"""Model files: exact round trips, verified digests, clear errors, atomic saves, no pickle."""

import json
import os
import pickle
import struct

import numpy as np
import pytest

import vecnn as vn
from vecnn import io
from vecnn import layers as L


@pytest.fixture
def trained(rng):
    X = rng.standard_normal((64, 5)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model = vn.Sequential([L.Dense(5, 8), L.BatchNorm1D(8), L.GELU(), L.Dropout(0.2), L.Dense(8, 3)], seed=1)
    model.fit(X, y, loss=vn.losses.CrossEntropy(label_smoothing=0.1), epochs=2, batch_size=16, verbose=0)
    model.class_names = ["a", "b", "c"]
    return model, X, y


def test_round_trip_is_exact(trained, tmp_path):
    model, X, y = trained
    path = tmp_path / "m.vecnn"
    model.save(path)
    loaded = vn.load(path)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded.flat_params, model.flat_params)
    np.testing.assert_array_equal(loaded.layers[1].state["running_var"], model.layers[1].state["running_var"])
    assert loaded.evaluate(X, y) == model.evaluate(X, y)  # the loss came back with the model
    assert loaded.loss.label_smoothing == 0.1 and loaded.class_names == ["a", "b", "c"]
    assert [type(l).__name__ for l in loaded.layers] == [type(l).__name__ for l in model.layers]
    assert loaded.flat_params.dtype == np.float32


def test_file_is_safetensors_with_vecnn_metadata(trained, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    model, *_ = trained
    model.save(tmp_path / "m.vecnn")
    tensors = load_file(tmp_path / "m.vecnn")
    assert tensors["layers.0.W"].shape == (5, 8) and "layers.1.state.running_mean" in tensors
    with safe_open(tmp_path / "m.vecnn", "np") as f:
        meta = json.loads(f.metadata()["vecnn"])
    assert meta["format"] == "vecnn-model" and meta["format_version"] == 2 and len(meta["sha256"]) == 64
    assert [a["name"] for a in meta["architecture"]] == ["Dense", "BatchNorm1D", "GELU", "Dropout", "Dense"]


def flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_tampered_weight_byte_is_caught(trained, tmp_path):
    model, *_ = trained
    path = tmp_path / "m.vecnn"
    model.save(path)
    flip_byte(path, path.stat().st_size - 3)  # inside the tensor data
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        vn.load(path)


def test_every_single_byte_flip_in_the_data_is_caught(trained, tmp_path):
    model, *_ = trained
    path = tmp_path / "m.vecnn"
    model.save(path)
    good = path.read_bytes()
    (n,) = struct.unpack("<Q", good[:8])
    rng = np.random.default_rng(0)
    for offset in rng.integers(8 + n, len(good), 25):
        path.write_bytes(good)
        flip_byte(path, int(offset))
        with pytest.raises(ValueError):
            vn.load(path)


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "empty"),
        (b"abc", "too short"),
        (pickle.dumps({"W": [1, 2, 3]}), "not a vecnn model file"),
        (b"PK\x03\x04" + b"\0" * 100, "not a vecnn model file"),
        (struct.pack("<Q", 10) + b"not json!!", "not a vecnn model file"),
    ],
)
def test_foreign_or_empty_files(tmp_path, content, match):
    path = tmp_path / "x.vecnn"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        vn.load(path)


def test_truncated_file(trained, tmp_path):
    model, *_ = trained
    path = tmp_path / "m.vecnn"
    model.save(path)
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 20):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated|outside the file|not a vecnn"):
            vn.load(path)


def test_plain_safetensors_without_metadata(tmp_path):
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3, np.float32)}, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="without vecnn metadata"):
        vn.load(tmp_path / "plain.safetensors")


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such model file"):
        vn.load(tmp_path / "nope.vecnn")


def test_altered_architecture_is_refused(trained, tmp_path):
    model, *_ = trained
    tensors = io.model_tensors(model)
    meta = io.model_meta(model)
    meta["architecture"][0]["config"]["out_features"] = 9  # no longer matches the weights
    path = tmp_path / "m.vecnn"
    io.atomic_write(path, io.dumps(tensors, meta))
    with pytest.raises(ValueError, match=r"layers.0.W.*shape \(5, 8\).*expects \(5, 9\)"):
        vn.load(path)
    meta["architecture"][0]["name"] = "os.system"
    io.atomic_write(path, io.dumps(tensors, meta))
    with pytest.raises(ValueError, match="unknown layer 'os.system'"):
        vn.load(path)


def test_crash_mid_save_keeps_the_previous_model(trained, tmp_path, monkeypatch):
    model, X, _ = trained
    path = tmp_path / "m.vecnn"
    model.save(path)
    before = path.read_bytes()
    model.flat_params[...] += 1

    def crash(*a, **k):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.vecnn"]  # no temporary file left behind


def test_custom_layer_registration(tmp_path, rng):
    @vn.register_layer
    class Scale(L.Layer):
        def __init__(self, features):
            super().__init__()
            self.features = features
            self._alloc("s", (features,))
            self.params["s"][...] = 1

        def forward(self, x, training=False):
            self._x = x
            return x * self.params["s"]

        def backward(self, grad_y):
            np.sum(grad_y * self._x, axis=0, out=self.grads["s"])
            return grad_y * self.params["s"]

        def config(self):
            return {"features": self.features}

    X = rng.standard_normal((32, 4)).astype(np.float32)
    y = rng.integers(0, 2, 32)
    model = vn.Sequential([Scale(4), L.Dense(4, 2)], seed=0)
    model.fit(X, y, epochs=2, verbose=0)
    assert not np.allclose(model.layers[0].params["s"], 1)  # it trained
    model.save(tmp_path / "c.vecnn")
    np.testing.assert_array_equal(vn.load(tmp_path / "c.vecnn").predict(X), model.predict(X))
    with pytest.raises(ValueError, match="already taken"):

        @vn.register_layer(name="Scale")
        class Other(L.Layer):
            pass


def test_loading_never_unpickles(trained, tmp_path, monkeypatch):
    model, X, _ = trained
    model.save(tmp_path / "m.vecnn")

    def refuse(*a, **k):
        raise AssertionError("loading a model must not unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(np, "load", refuse)
    np.testing.assert_array_equal(vn.load(tmp_path / "m.vecnn").predict(X), model.predict(X))
