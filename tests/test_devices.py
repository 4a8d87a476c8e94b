"""Moving a model between devices (``Sequential.to``), without a GPU: a stand-in device whose
arrays are a NumPy subclass, registered with ``vecnn.ops`` like a backend of its own. What moves
(parameters, gradients, optimizer state, BatchNorm statistics), what stays on the host (what
``predict`` returns, what ``save`` writes), and that training there equals training on the CPU."""

import numpy as np
import pytest

import vecnn as vn
from vecnn import layers as L
from vecnn import ops
from vecnn.ops.numpy_backend import NumPyBackend

F = np.float32


class DeviceArray(np.ndarray):
    """An array 'on the device': ufuncs and slicing keep the type, so it stays there."""


class StandInGPU(NumPyBackend):
    name = "stand-in"
    device = "gpu"

    def __init__(self):
        super().__init__(np)
        self.ndarray = DeviceArray
        self.copies_in = 0

    def empty(self, shape, dtype):
        return np.empty(shape, dtype).view(DeviceArray)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype).view(DeviceArray)

    def asarray(self, a, dtype=None):
        if isinstance(a, DeviceArray) and (dtype is None or a.dtype == dtype):
            return a
        self.copies_in += 1
        return np.array(a, dtype=dtype).view(DeviceArray)  # a copy: host -> device

    def to_host(self, a):
        return np.array(a).view(np.ndarray)  # a copy: device -> host


@pytest.fixture
def gpu(monkeypatch):
    backend = StandInGPU()
    monkeypatch.setattr(ops, "_gpu", backend)
    monkeypatch.setattr(ops, "gpu_problem", lambda: None)
    ops.register(DeviceArray, backend)
    yield backend
    ops.register(DeviceArray, None)


def make_cnn(seed=0, dropout=0.1):
    # (no conv bias before BatchNorm: its true gradient is 0, and Adam would amplify rounding noise)
    return vn.Sequential(
        [
            L.Conv2D(1, 4, 3, padding=1, bias=False),
            L.BatchNorm2D(4),
            L.ReLU(),
            L.MaxPool2D(2),
            L.Flatten(),
            L.Dense(64, 16),
            L.ReLU(),
            L.Dropout(dropout),
            L.Dense(16, 3),
        ],
        seed=seed,
    )


def data(rng, n=96):
    return rng.standard_normal((n, 1, 8, 8), dtype=F), rng.integers(0, 3, n)


def on_device(model):
    arrays = [model.flat_params, model.flat_grads]
    for layer in model.layers:
        arrays += [*layer.params.values(), *layer.grads.values(), *layer.state.values()]
    if model.optimizer is not None:
        arrays += list(model.optimizer.state.values())
    return all(isinstance(a, DeviceArray) for a in arrays)


def test_to_moves_parameters_gradients_state_and_keeps_the_views(gpu, rng):
    model = make_cnn()
    before = model.flat_params.copy()
    assert model.to("gpu") is model and model.device == "gpu" and on_device(model)
    np.testing.assert_array_equal(np.asarray(model.flat_params), before)
    dense = model.layers[5]
    dense.params["W"][...] = 7  # still a view of the flat buffer
    assert (model.flat_params == 7).sum() == dense.params["W"].size
    model.to("cpu")
    assert model.device == "cpu" and type(model.flat_params) is np.ndarray
    assert type(model.layers[1].state["running_var"]) is np.ndarray


def test_training_on_the_device_equals_training_on_the_cpu(gpu, rng):
    X, y = data(rng)
    cpu_model, gpu_model = make_cnn(), make_cnn().to("gpu")
    for model in (cpu_model, gpu_model):
        model.fit(
            X,
            y,
            epochs=2,
            batch_size=32,
            verbose=0,
            seed=0,
            workers=1,
            optimizer=vn.optim.Adam(lr=1e-2),
            validation_data=(X[:20], y[:20]),
        )
    assert on_device(gpu_model) and gpu_model.optimizer.state
    np.testing.assert_allclose(np.asarray(gpu_model.flat_params), cpu_model.flat_params, rtol=1e-4, atol=1e-5)
    out = gpu_model.predict(X)
    assert type(out) is np.ndarray  # results come back to the host
    np.testing.assert_allclose(out, cpu_model.predict(X), rtol=1e-4, atol=1e-5)
    assert type(gpu_model.predict_proba(X[:5])) is np.ndarray
    scores = gpu_model.evaluate(X, y)
    assert scores == pytest.approx(cpu_model.evaluate(X, y), rel=1e-4)


def test_the_training_data_moves_once_per_fit(gpu, rng):
    X, y = data(rng)
    model = make_cnn(dropout=0).to("gpu")  # (Dropout's masks are drawn on the host, and move)
    before = gpu.copies_in
    model.fit(X, y, epochs=3, batch_size=16, verbose=0, workers=1)
    assert gpu.copies_in - before == 2 + 3  # X and y once, each epoch's order: no batch


def test_augmented_batches_move_after_augmenting_on_the_host(gpu, rng):
    X, y = data(rng)
    seen = []

    def augment(batch, generator):
        seen.append(type(batch))
        return batch[:, :, ::-1, :].copy()

    make_cnn().to("gpu").fit(X, y, epochs=1, batch_size=32, verbose=0, augment=augment, workers=1)
    assert seen and all(t is np.ndarray for t in seen)


def test_a_model_saved_on_the_device_loads_on_the_cpu_and_back(gpu, rng, tmp_path):
    X, y = data(rng)
    model = make_cnn().to("gpu")
    model.fit(X, y, epochs=1, batch_size=32, verbose=0, workers=1)
    model.save(tmp_path / "m.vecnn")
    loaded = vn.load(tmp_path / "m.vecnn")
    assert loaded.device == "cpu"
    np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=1e-5, atol=1e-6)
    again = loaded.to("gpu")
    np.testing.assert_allclose(again.predict(X), model.predict(X), rtol=1e-5, atol=1e-6)


def test_moving_after_training_keeps_the_optimizer_state(gpu, rng):
    X, y = data(rng)
    a, b = make_cnn(), make_cnn()
    for model in (a, b):
        model.fit(X, y, epochs=1, batch_size=32, verbose=0, seed=0, workers=1)
    b.to("gpu")
    assert on_device(b)
    for model in (a, b):  # Adam's moments carried over
        model.fit(X, y, epochs=1, batch_size=32, verbose=0, seed=1, workers=1)
    np.testing.assert_allclose(np.asarray(b.flat_params), a.flat_params, rtol=1e-4, atol=1e-5)


def test_splitting_batches_across_threads_is_cpu_only(gpu, rng):
    X, y = data(rng, 64)
    model = vn.Sequential([L.Conv2D(1, 2, 3), L.Flatten(), L.Dense(72, 3)], seed=0).to("gpu")
    with pytest.raises(ValueError, match="workers=2 splits batches across CPU threads"):
        model.fit(X, y, workers=2, verbose=0)
    model.fit(X, y, workers="auto", verbose=0, epochs=1)  # auto: one worker there


def test_moving_keeps_a_layers_own_private_arrays(gpu, rng):
    """Only scratch memory is dropped on a move or a dtype change, never a layer's own arrays."""

    class Shift(L.Layer):
        batch_independent = True

        def __init__(self):
            super().__init__()
            self._offset = np.full(3, 2.0, F)

        def forward(self, x, training=False):
            return x + self._offset

    model = vn.Sequential([L.Dense(3, 3), Shift()], seed=0)
    model.layers[1].astype(np.float64)
    model.to("gpu").to("cpu")
    assert model.layers[1]._offset.tolist() == [2.0, 2.0, 2.0]
    assert model.predict(np.zeros((2, 3), F)).shape == (2, 3)
