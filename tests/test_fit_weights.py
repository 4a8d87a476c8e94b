"""fit(sample_weight=..., class_weight=...): per-batch weighted means, checked against an
independent float64 NumPy reference of one step, and the equivalences the semantics promise."""

import sys

import numpy as np
import pytest

import vecnn as vn
from vecnn import layers as L
from vecnn import losses


def data(rng, n=40, features=5, classes=3):
    X = rng.standard_normal((n, features)).astype(np.float32)
    y = rng.integers(0, classes, n)
    return X, y


def mlp(features=5, classes=3, seed=0):
    return vn.Sequential([L.Dense(features, 8), L.ReLU(), L.Dense(8, classes)], seed=seed)


def linear(features=5, outputs=3, seed=0):
    return vn.Sequential([L.Dense(features, outputs)], seed=seed)


# -- one full-batch SGD step against a float64 reference ------------------------------------------
def reference_step(W, b, X, t, w, kind, lr, eps=0.0):
    """W, b after one SGD step on the weighted mean loss sum_i w_i l_i / sum_i w_i (float64)."""
    W, b, X, w = (a.astype(np.float64) for a in (W, b, X, w))
    z = X @ W + b
    n, k = z.shape
    if kind == "cross_entropy":
        target = np.full((n, k), eps / k)
        target[np.arange(n), t] += 1 - eps
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        dz = (p - target) * (w / w.sum())[:, None]
    elif kind == "mse":
        dz = 2 * (z - t) / k * (w / w.sum())[:, None]
    else:  # bce_with_logits
        dz = (1 / (1 + np.exp(-z)) - t) / k * (w / w.sum())[:, None]
    return W - lr * X.T @ dz, b - lr * dz.sum(0)


@pytest.mark.parametrize(
    "kind, eps",
    [("cross_entropy", 0.0), ("cross_entropy", 0.2), ("mse", 0.0), ("bce_with_logits", 0.0)],
)
@pytest.mark.parametrize("workers", [1, 2])
def test_one_weighted_step_matches_a_float64_reference(rng, kind, eps, workers, cpu_backend):
    n, k = 64, 3
    X = rng.standard_normal((n, 5)).astype(np.float32)
    if kind == "cross_entropy":
        t = rng.integers(0, k, n)
        loss = losses.CrossEntropy(label_smoothing=eps)
    elif kind == "mse":
        t = rng.standard_normal((n, k)).astype(np.float32)
        loss = losses.MSE()
    else:
        t = rng.integers(0, 2, (n, k)).astype(np.float32)
        loss = losses.BCEWithLogits()
    w = rng.uniform(0, 3, n)
    w[:5] = 0
    model = linear(outputs=k, seed=3)
    W0, b0 = model.layers[0].params["W"].copy(), model.layers[0].params["b"].copy()
    lr = 0.5
    model.fit(
        X, t, loss=loss, optimizer=vn.optim.SGD(lr=lr), epochs=1, batch_size=n, shuffle=False, verbose=0,
        workers=workers, sample_weight=w,
    )  # fmt: skip
    W1, b1 = reference_step(W0, b0, X, t, w, kind, lr, eps)
    np.testing.assert_allclose(model.layers[0].params["W"], W1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.layers[0].params["b"], b1, rtol=1e-5, atol=1e-6)


def test_weighted_loss_value_matches_torch_reduction_none(rng):
    torch = pytest.importorskip("torch")
    z = rng.standard_normal((20, 4)).astype(np.float32)
    y = rng.integers(0, 4, 20)
    w = rng.uniform(0, 2, 20).astype(np.float32)
    loss = losses.CrossEntropy(label_smoothing=0.1)
    value = loss.forward(z, y, w)
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    per = torch.nn.functional.cross_entropy(zt, torch.tensor(y), reduction="none", label_smoothing=0.1)
    ref = (per * torch.tensor(w, dtype=torch.float64)).sum() / float(w.sum(dtype=np.float64))
    ref.backward()
    ref = ref.detach()
    assert value == pytest.approx(ref.item(), rel=1e-5)
    np.testing.assert_allclose(loss.backward(), zt.grad.numpy(), rtol=1e-4, atol=1e-7)
    hit = z.argmax(1) == y
    assert loss.last_metrics()["accuracy"] == pytest.approx(float((w * hit).sum() / w.sum()), rel=1e-6)


# -- equivalences ---------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_ones_train_exactly_as_no_weights(rng, workers):
    X, y = data(rng, n=70)
    kw = dict(epochs=2, batch_size=32, seed=4, verbose=0, workers=workers, validation_split=0.2)
    a, b = mlp(), mlp()
    ha = a.fit(X, y, **kw)
    hb = b.fit(X, y, sample_weight=np.ones(70), **kw)
    assert np.array_equal(a.flat_params, b.flat_params)
    assert ha.history == hb.history


def test_weights_all_equal_but_not_one_train_as_no_weights(rng):
    X, y = data(rng)
    a, b = mlp(), mlp()
    a.fit(X, y, epochs=2, batch_size=16, seed=1, verbose=0)
    b.fit(X, y, epochs=2, batch_size=16, seed=1, verbose=0, sample_weight=np.full(40, 2.5))
    np.testing.assert_allclose(a.flat_params, b.flat_params, rtol=1e-6, atol=1e-7)


def test_integer_weights_on_a_full_batch_equal_repeated_rows(rng):
    X, y = data(rng, n=30)
    reps = rng.integers(0, 4, 30)
    reps[0] = 1
    a, b = mlp(), mlp()
    opt = lambda: vn.optim.SGD(lr=0.1)  # noqa: E731
    a.fit(X, y, optimizer=opt(), epochs=3, batch_size=1000, verbose=0, sample_weight=reps)
    b.fit(np.repeat(X, reps, 0), np.repeat(y, reps), optimizer=opt(), epochs=3, batch_size=1000, verbose=0)
    np.testing.assert_allclose(a.flat_params, b.flat_params, rtol=1e-5, atol=1e-6)


def test_zero_weight_rows_have_no_influence(rng):
    X, y = data(rng, n=30)
    w = np.ones(30)
    w[[3, 7, 20]] = 0
    keep = w > 0
    a, b = mlp(), mlp()
    ha = a.fit(X, y, optimizer=vn.optim.SGD(lr=0.1), epochs=3, batch_size=64, verbose=0, sample_weight=w)
    hb = b.fit(X[keep], y[keep], optimizer=vn.optim.SGD(lr=0.1), epochs=3, batch_size=64, verbose=0)
    np.testing.assert_allclose(a.flat_params, b.flat_params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-5)


def test_a_batch_of_zero_weights_changes_nothing(rng):
    X, y = data(rng, n=20)
    w = np.ones(20)
    w[10:] = 0  # the second batch (shuffle=False) weighs nothing
    a, b = mlp(), mlp()
    ha = a.fit(X, y, optimizer=vn.optim.SGD(lr=0.1), batch_size=10, shuffle=False, verbose=0, sample_weight=w)
    b.fit(X[:10], y[:10], optimizer=vn.optim.SGD(lr=0.1), batch_size=10, shuffle=False, verbose=0)
    # SGD without momentum: a zero gradient step leaves the weights where they are
    np.testing.assert_allclose(a.flat_params, b.flat_params, rtol=1e-6, atol=1e-7)
    assert np.isfinite(ha.history["loss"][0])


@pytest.mark.parametrize("kind", ["cross_entropy", "mse"])
def test_workers_2_equal_workers_1_with_weights(rng, kind):
    X = rng.standard_normal((96, 5)).astype(np.float32)
    y = rng.integers(0, 3, 96) if kind == "cross_entropy" else rng.standard_normal((96, 3)).astype(np.float32)
    w = rng.uniform(0, 2, 96)
    w[:40] = 0  # one worker's share of the first batch weighs nothing
    models = []
    for workers in (1, 2):
        m = mlp()
        m.fit(X, y, loss=kind, epochs=2, batch_size=64, seed=2, verbose=0, workers=workers, sample_weight=w)
        models.append(m)
    np.testing.assert_allclose(models[0].flat_params, models[1].flat_params, rtol=1e-5, atol=1e-5)


def test_class_weight_balanced_equals_the_explicit_weights(rng):
    X, y = data(rng, n=50)
    y[:30] = 0  # unbalanced
    counts = np.bincount(y, minlength=3)
    explicit = {c: 50 / (3 * counts[c]) for c in range(3)}
    a, b, c = mlp(), mlp(), mlp()
    kw = dict(epochs=2, batch_size=16, seed=0, verbose=0)
    ha = a.fit(X, y, class_weight="balanced", **kw)
    hb = b.fit(X, y, class_weight=explicit, **kw)
    hc = c.fit(X, y, sample_weight=np.array([explicit[k] for k in y]), **kw)
    np.testing.assert_allclose(a.flat_params, b.flat_params, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a.flat_params, c.flat_params, rtol=1e-6, atol=1e-7)
    assert ha.history["loss"] == pytest.approx(hb.history["loss"], rel=1e-6)
    assert ha.history["loss"] == pytest.approx(hc.history["loss"], rel=1e-6)
    sklearn = pytest.importorskip("sklearn.utils.class_weight")
    ref = sklearn.compute_class_weight("balanced", classes=np.arange(3), y=y)
    np.testing.assert_allclose([explicit[k] for k in range(3)], ref)


def test_class_weight_multiplies_sample_weight(rng):
    X, y = data(rng)
    sw = rng.uniform(0.5, 2, 40)
    a, b = mlp(), mlp()
    kw = dict(epochs=1, batch_size=16, seed=0, verbose=0)
    a.fit(X, y, sample_weight=sw, class_weight={0: 2.0, 2: 0.5}, **kw)
    b.fit(X, y, sample_weight=sw * np.array([2.0, 1.0, 0.5])[y], **kw)
    np.testing.assert_allclose(a.flat_params, b.flat_params, rtol=1e-6, atol=1e-7)


def test_epoch_loss_is_the_weighted_mean(rng):
    X, y = data(rng, n=32)
    w = rng.uniform(0, 2, 32)
    model = mlp()
    before = model.predict(X)
    hist = model.fit(X, y, batch_size=32, verbose=0, sample_weight=w)  # one step: the loss of the weights before it
    p = np.exp(before - before.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    nll = -np.log(p[np.arange(32), y])
    assert hist.history["loss"][0] == pytest.approx(float((w * nll).sum() / w.sum()), rel=1e-5)
    acc = (w * (before.argmax(1) == y)).sum() / w.sum()
    assert hist.history["accuracy"][0] == pytest.approx(float(acc), rel=1e-6)


# -- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sample_weight, match",
    [
        (np.ones(39), r"sample_weight: expected shape \(40,\)"),
        (np.ones((40, 1)), r"sample_weight: expected shape \(40,\)"),
        (-np.ones(40), r"sample_weight: weights must be >= 0"),
        (np.r_[np.ones(39), np.nan], r"sample_weight: contains NaN or Inf, the first at index 39"),
        (np.r_[np.ones(39), np.inf], r"sample_weight: contains NaN or Inf"),
        (np.zeros(40), r"sample_weight: the weights of the 40 training rows are all zero"),
        (np.array(["a"] * 40), r"sample_weight: expected real numbers"),
    ],
)
def test_bad_sample_weight_is_refused_naming_it(rng, sample_weight, match):
    X, y = data(rng)
    with pytest.raises(ValueError, match=match):
        mlp().fit(X, y, verbose=0, sample_weight=sample_weight)


@pytest.mark.parametrize(
    "class_weight, match",
    [
        ({5: 1.0}, r"class_weight: unknown class 5"),
        ({"cat": 1.0}, r"class_weight: unknown class 'cat'"),
        ({0: -1.0}, r"class_weight: the weight of class 0 must be finite and >= 0"),
        ({0: float("nan")}, r"class_weight: the weight of class 0 must be finite"),
        ("even", r"class_weight: expected a dict or 'balanced'"),
    ],
)
def test_bad_class_weight_is_refused_naming_it(rng, class_weight, match):
    X, y = data(rng)
    with pytest.raises(ValueError, match=match):
        mlp().fit(X, y, verbose=0, class_weight=class_weight)


def test_class_weight_needs_a_classifier_loss(rng):
    X = rng.standard_normal((20, 5)).astype(np.float32)
    t = rng.standard_normal((20, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"class_weight: needs a classifier loss.*MSE"):
        mlp().fit(X, t, loss="mse", verbose=0, class_weight="balanced")


def test_class_weight_with_bce_on_one_output(rng):
    X = rng.standard_normal((40, 5)).astype(np.float32)
    t = rng.integers(0, 2, 40).astype(np.float32)
    t[:30] = 1
    a, b = mlp(classes=1), mlp(classes=1)
    a.fit(X, t, loss="bce_with_logits", verbose=0, seed=0, class_weight="balanced")
    counts = np.bincount(t.astype(int))
    b.fit(X, t, loss="bce_with_logits", verbose=0, seed=0, sample_weight=(40 / (2 * counts))[t.astype(int)])
    np.testing.assert_allclose(a.flat_params, b.flat_params, rtol=1e-6, atol=1e-7)


def test_a_loss_without_weights_refuses_them(rng):
    class Plain(losses.Loss):
        def forward(self, pred, target):
            self._d = pred - target.reshape(pred.shape)
            return float((self._d**2).mean())

        def backward(self):
            return 2 * self._d / self._d.size

    X = rng.standard_normal((20, 5)).astype(np.float32)
    t = rng.standard_normal((20, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"sample_weight: the loss .* does not take per-sample weights"):
        mlp().fit(X, t, loss=Plain(), verbose=0, sample_weight=np.ones(20))


# -- across MPI ranks -----------------------------------------------------------------------------
def _mpi_case(distributed):
    """Two epochs of a weighted fit (some rows weigh nothing, one rank's share of some batches
    among them); run in-process and, as this file's ``__main__``, under ``mpiexec -n 2``."""
    rng = np.random.default_rng(7)
    X, y = data(rng, n=100)
    w = rng.uniform(0, 2, 100)
    w[:20] = 0
    model = mlp()
    h = model.fit(
        X, y, optimizer=vn.optim.Adam(lr=1e-2), epochs=2, batch_size=32, seed=5, verbose=0, sample_weight=w,
        class_weight={1: 2.0}, distributed=distributed,
    )  # fmt: skip
    return model.flat_params, np.array(h.history["loss"]), np.array(h.history["accuracy"])


def test_two_mpi_ranks_train_what_one_process_trains_with_weights(tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("mpi4py")
    mpiexec = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(mpiexec) if mpiexec.exists() else shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("needs the mpi extra: pip install 'vecnn[mpi]' (mpiexec)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_COMM_WORLD", "PMIX_", "PMI_"))}
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    argv = [mpiexec, "--oversubscribe", "-n", "2", sys.executable, __file__, str(tmp_path)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    params, loss, acc = _mpi_case(False)
    for r in range(2):
        got = np.load(tmp_path / f"rank{r}.npz")
        np.testing.assert_allclose(got["params"], params, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["loss"], loss, rtol=1e-5)
        np.testing.assert_allclose(got["accuracy"], acc, rtol=1e-5)


if __name__ == "__main__":  # one rank of the test above
    from vecnn import distributed as _dist

    params, loss, acc = _mpi_case(True)
    np.savez(f"{sys.argv[1]}/rank{_dist.world().rank}.npz", params=params, loss=loss, accuracy=acc)
