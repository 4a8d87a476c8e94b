"""Sequential: learning, determinism, bad input refused at the edge, divergence, callbacks."""

import numpy as np
import pytest

import vecnn as vn
from vecnn import layers as L


def blobs(rng, n=300, features=6, classes=3):
    centers = rng.standard_normal((classes, features)) * 3
    y = rng.integers(0, classes, n)
    X = (centers[y] + rng.standard_normal((n, features))).astype(np.float32)
    return X, y


def small_model(features=6, classes=3, seed=0):
    return vn.Sequential([L.Dense(features, 16), L.ReLU(), L.Dropout(0.1), L.Dense(16, classes)], seed=seed)


def test_learns_a_small_problem(rng):
    X, y = blobs(rng)
    model = small_model()
    before = model.evaluate(X, y)
    hist = model.fit(X, y, optimizer=vn.optim.Adam(lr=1e-2), epochs=15, batch_size=32, verbose=0)
    after = model.evaluate(X, y)
    assert after["accuracy"] > 0.95 and after["loss"] < before["loss"] / 3
    assert len(hist.history["loss"]) == 15 and hist.history["loss"][-1] < hist.history["loss"][0]


def test_flat_buffers_are_views(rng):
    model = small_model()
    W = model.layers[0].params["W"]
    assert np.shares_memory(W, model.flat_params)
    assert np.shares_memory(model.layers[0].grads["W"], model.flat_grads)
    assert model.flat_params.dtype == np.float32 and model.flat_params.flags.c_contiguous
    model.flat_params[...] = 0
    assert not W.any()


def test_same_seed_bit_identical(rng):
    X, y = blobs(rng)
    runs = []
    for _ in range(2):
        model = small_model(seed=3)
        model.fit(X, y, epochs=3, batch_size=16, seed=7, verbose=0)
        runs.append(model.flat_params.copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    other = small_model(seed=4)
    other.fit(X, y, epochs=3, batch_size=16, seed=7, verbose=0)
    assert not np.array_equal(runs[0], other.flat_params)


def test_float32_end_to_end_and_float64_input_cast_once(rng):
    X, y = blobs(rng)
    model = small_model()
    model.fit(X.astype(np.float64), y, epochs=1, verbose=0)
    assert model.flat_params.dtype == np.float32 and model.flat_grads.dtype == np.float32
    assert model.predict(X.astype(np.float64)).dtype == np.float32
    assert all(v.dtype == np.float32 for v in model.optimizer.state.values())


def test_validation_and_predict_batches(rng):
    X, y = blobs(rng)
    model = small_model()
    hist = model.fit(X, y, epochs=2, validation_split=0.2, verbose=0)
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(hist.history)
    hist = model.fit(X[:200], y[:200], epochs=1, validation_data=(X[200:], y[200:]), verbose=0)
    np.testing.assert_allclose(hist.history["val_loss"][0], model.evaluate(X[200:], y[200:])["loss"], rtol=1e-6)
    np.testing.assert_array_equal(model.predict(X, batch_size=7), model.predict(X, batch_size=1000))
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert (proba.argmax(1) == model.predict(X).argmax(1)).all()


def test_regression_with_mse(rng):
    X = rng.standard_normal((200, 4)).astype(np.float32)
    y = X @ np.array([1.0, -2.0, 0.5, 0.0], np.float32) + 0.3
    model = vn.Sequential([L.Dense(4, 1)], seed=0)
    model.fit(X, y, loss="mse", optimizer=vn.optim.SGD(lr=0.05), epochs=30, verbose=0)
    scores = model.evaluate(X, y)
    assert set(scores) == {"loss", "mse", "mae"} and scores["mse"] < 1e-3


@pytest.mark.parametrize(
    "make,match",
    [
        (
            lambda X, y: (X[:, :5], y),
            r"layer 0 Dense\(in_features=6, out_features=16.*expected input of shape \(n, 6\), received \(n, 5\)",
        ),
        (lambda X, y: (X, y[:-1]), "same number of samples, received 300 and 299"),
        (lambda X, y: (X, np.where(y == 0, 3, y)), r"labels must lie in \[0, 3\).*received label 3"),
        (lambda X, y: (X, np.where(y == 0, -1, y)), r"received label -1"),
        (lambda X, y: (X, y + 0.5), "labels must be integers"),
        (lambda X, y: (X, y.astype(str)), "labels must be integers"),
        (lambda X, y: (np.where(np.arange(300)[:, None] == 5, np.nan, X), y), r"non-finite.*index \(5, 0\)"),
        (lambda X, y: (np.where(X > 4, np.inf, X), y), "non-finite"),
        (lambda X, y: (X[:0], y[:0]), "empty"),
        (lambda X, y: (X[0], y), r"shape \(n_samples, \.\.\.\)"),
    ],
)
def test_bad_input_is_a_clear_value_error(rng, make, match):
    X, y = blobs(rng)
    model = small_model()
    before = model.flat_params.copy()
    Xb, yb = make(X, y)
    with pytest.raises(ValueError, match=match):
        model.fit(Xb, yb, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.flat_params, before)


def test_predict_checks_too(rng):
    model = small_model()
    with pytest.raises(ValueError, match=r"expected input of shape \(n, 6\), received \(n, 7\)"):
        model.predict(np.zeros((3, 7), np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        model.predict(np.full((3, 6), np.nan, np.float32))


def test_divergence_raises_and_restores(rng):
    X, y = blobs(rng)
    X[17] *= 1e30  # finite data; with this learning rate the weights blow up after one step
    model = vn.Sequential([L.Dense(6, 3)], seed=0)
    snapshots = []

    class Snap(vn.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(self.model.flat_params.copy())

    with pytest.raises(FloatingPointError, match=r"epoch 2, step 1\b.*restored"):
        model.fit(X, y, optimizer=vn.optim.SGD(lr=1e20), epochs=3, batch_size=300, callbacks=[Snap()], verbose=0)
    assert np.isfinite(model.flat_params).all()
    np.testing.assert_array_equal(model.flat_params, snapshots[-1])


def test_early_stopping_restores_best(rng):
    X, y = blobs(rng)
    model = small_model()
    seen = []

    class Spy(vn.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((logs["val_loss"], self.model.get_weights()["params"]))

    stop = vn.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    # a learning rate this large makes validation loss bounce, so stopping triggers
    model.fit(X, y, optimizer=vn.optim.SGD(lr=2.0), epochs=40, validation_split=0.3, callbacks=[Spy(), stop], verbose=0)
    assert stop.stopped_epoch is not None and len(seen) < 40
    best = min(range(len(seen)), key=lambda i: seen[i][0])
    assert stop.best_epoch == best
    np.testing.assert_array_equal(model.flat_params, seen[best][1])


def test_model_checkpoint(tmp_path, rng):
    X, y = blobs(rng)
    model = small_model()
    cb = vn.ModelCheckpoint(tmp_path / "m-{epoch}.vecnn", monitor="val_loss", save_best_only=False)
    model.fit(X, y, epochs=2, validation_split=0.2, callbacks=[cb], verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-1.vecnn", "m-2.vecnn"]
    np.testing.assert_array_equal(vn.load(tmp_path / "m-2.vecnn").predict(X), model.predict(X))


def test_progress_bar_counts_samples(rng, capsys):
    X, y = blobs(rng)
    small_model().fit(X, y, epochs=1, batch_size=64, verbose=1)
    err = capsys.readouterr().err
    assert "300/300" in err and "samples/s" in err and "loss=" in err and "accuracy=" in err
    small_model().fit(X, y, epochs=1, verbose=0)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    small_model().fit(X, y, epochs=2, verbose=2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [l.split()[:2] for l in lines] == [["Epoch", "1/2"], ["Epoch", "2/2"]] and "loss=" in lines[0]


def test_summary_and_shapes():
    model = vn.Sequential([L.Flatten(), L.Dense(64, 32), L.ReLU(), L.Dense(32, 10)])
    text = model.summary((1, 8, 8))
    assert "(n, 32)" in text and f"{64 * 32 + 32:,}" in text and f"{2 * (64 * 32 + 32 * 10):,}" in text
    with pytest.raises(ValueError, match=r"layer 1 Dense.*expected input of shape \(n, 64\)"):
        model.shapes((1, 9, 9))


def test_constructor_errors():
    with pytest.raises(ValueError, match="at least one layer"):
        vn.Sequential([])
    with pytest.raises(ValueError, match="not a vecnn Layer"):
        vn.Sequential([L.Dense(2, 2), "relu"])
    with pytest.raises(ValueError, match="out_features"):
        L.Dense(3, 0)
    with pytest.raises(ValueError, match="fit: expected epochs"):
        small_model().fit(np.zeros((4, 6), np.float32), np.zeros(4, int), epochs=0)


def test_summary_infers_what_it_can_without_an_input_shape():
    model = vn.Sequential([L.Flatten(), L.Dense(64, 32), L.ReLU(), L.Dense(32, 10)])
    text = model.summary()  # the Flatten takes any shape: its output is what the Dense expects
    rows = {line.split()[1]: line for line in text.splitlines() if line[:1].isdigit()}
    known = model.summary((1, 8, 8))  # the same rows as with the input shape, but the Flatten's FLOPs
    known_rows = {line.split()[1]: line for line in known.splitlines() if line[:1].isdigit()}
    assert "(n, 64)" in rows["Flatten"] and "unknown" in rows["Flatten"] and "?" not in text
    assert [rows[k].split() for k in ("Dense", "ReLU")] == [known_rows[k].split() for k in ("Dense", "ReLU")]
    assert f"forward FLOPs/sample of layers 1-3: {2 * (64 * 32 + 32 * 10):,}" in text
    assert "input shape unknown: summary(input_shape=...) for the FLOPs of layer 0" in text
    conv = vn.Sequential([L.Conv2D(1, 4, 3, padding=1), L.ReLU(), L.MaxPool2D(2), L.Flatten(), L.Dense(64, 10)])
    lines = conv.summary().splitlines()
    assert [l.split()[2] for l in lines[2:5]] == ["unknown"] * 3 and "(n, 64)" in lines[5]
    assert "output shapes of layers 0-2 and the FLOPs of layers 0-3" in lines[-1]
    nothing = vn.Sequential([L.Flatten(), L.ReLU()]).summary()
    assert "?" not in nothing and nothing.endswith(
        "input shape unknown: summary(input_shape=...) for the output shapes and FLOPs"
    )
