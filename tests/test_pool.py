"""vecnn.ops._openblas: memory-bound kernels split across OpenBLAS's own threads (a private
detail of the compiled CPU backend)."""

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import vecnn as vn
from vecnn import kernels
from vecnn import layers as L
from vecnn.ops import _openblas as pool


def _pool_expected() -> bool:
    """Whether this environment should get the pool (decided without vecnn.pool): numba, and a
    pthreads OpenBLAS >= 0.3.20 exporting blas_level1_thread as NumPy's BLAS."""
    import ctypes
    import importlib.util

    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if importlib.util.find_spec("numba") is None or not blas:
        return False
    info = blas[0]
    version = tuple(int(x) for x in info["version"].split(".")[:3])
    return (
        info["internal_api"] == "openblas"
        and info.get("threading_layer") == "pthreads"
        and version >= (0, 3, 20)
        and hasattr(ctypes.CDLL(info["filepath"]), "blas_level1_thread")
    )


pytestmark = pytest.mark.skipif(not _pool_expected(), reason="no pthreads OpenBLAS with blas_level1_thread here")

F = np.float32
ADAM = (F(0.9), F(0.1), F(0.999), F(0.001), F(1e-8), F(1e-3), F(1.3), F(0), F(1))
RULES = {
    "adam": ((ADAM), 2),
    "sgd": ((F(0.01), F(0.9), F(1e-4), True, False), 1),
    "rmsprop": ((F(0.01), F(0.99), F(0.01), F(1e-8), F(0)), 1),
}


def test_numpy_openblas_gets_the_pool():
    assert pool.get() is not None and pool.get().threads >= 1


@pytest.mark.parametrize("threads", [1, 2])
def test_the_blas_splits_a_range_into_one_share_per_thread(threads):
    from vecnn.ops import _numba as kernels_numba

    table = np.zeros(1001, np.float32)
    with threadpool_limits(threads, user_api="blas"):
        assert kernels_numba.run_probe(pool.get()._fns, table, pool.get().threads) == 0
    assert sorted(table[table > 0].tolist()) == ([1001.0] if threads == 1 else [500.0, 501.0])


def test_optimizer_falls_back_for_gradients_the_shares_cannot_read():
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal(pool.MIN_ELEMENTS + 10).astype(F)
    G = rng.standard_normal((p0.size, 2)).astype(F)
    reference = p0.copy()
    vn.optim.Adam(lr=0.1).step(reference, np.ascontiguousarray(G[:, 0]))
    for g in (G[:, 0], G[:, 0].astype(np.float64)):  # strided; float64
        p = p0.copy()
        assert vn.optim.Adam(lr=0.1).step(p, g)
        np.testing.assert_allclose(p, reference, rtol=1e-5, atol=1e-8)  # float64 g: other rounding


def test_loaded_state_of_another_dtype_or_layout_is_converted():
    rng = np.random.default_rng(6)
    p0 = rng.standard_normal(pool.MIN_ELEMENTS + 10).astype(F)
    g = rng.standard_normal(p0.size).astype(F)
    a, b = vn.optim.Adam(lr=0.1), vn.optim.Adam(lr=0.1)
    pa = p0.copy()
    a.step(pa, g.copy())
    state = a.state_dict()
    b.load_state_dict(
        {"t": state["t"], "m": state["m"].astype(np.float64), "v": np.repeat(state["v"], 2)[::2]}
    )  # float64; strided
    pa2, pb2 = pa.copy(), pa.copy()
    assert a.step(pa2, g.copy()) and b.step(pb2, g.copy())
    np.testing.assert_array_equal(pa2, pb2)
    assert all(v.dtype == F and v.flags.c_contiguous for v in b.state.values())


def _state(rng, n):
    p = rng.standard_normal(n).astype(F)
    g = rng.standard_normal(n).astype(F)
    s1 = (rng.random(n) * 0.01).astype(F)  # valid for every rule (RMSProp: >= 0)
    s2 = (rng.random(n) * 0.01).astype(F)
    return p, g, s1, s2


def _step(name, arrays, threads):
    p, g, s1, s2 = (a.copy() for a in arrays)
    old = np.full_like(p, np.nan)
    scalars, n_state = RULES[name]
    with threadpool_limits(threads, user_api="blas"):
        chk = pool.get().optimizer(name, p, g, s1, s2 if n_state == 2 else s1, old, *scalars)
    return chk, p, s1, s2, old


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("n", [5, pool.MIN_ELEMENTS - 1, pool.MIN_ELEMENTS + 3, 100_003])
def test_optimizer_split_does_not_depend_on_threads_and_matches_the_kernel(name, n):
    rng = np.random.default_rng(n)
    arrays = _state(rng, n)
    one = _step(name, arrays, 1)
    two = _step(name, arrays, 2)
    assert one[0] == two[0] == 0
    for a, b in zip(one[1:], two[1:]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(one[4], arrays[0])  # old: the parameters before
    # the one-thread kernel computes the same rule (to rounding: it is compiled separately)
    p, g, s1, s2 = (a.copy() for a in arrays)
    scalars, n_state = RULES[name]
    state = (s1, s2) if n_state == 2 else (s1,)
    getattr(kernels.get(), name)(p, g, *state, np.empty_like(p), *scalars)
    np.testing.assert_allclose(one[1], p, rtol=1e-6, atol=1e-7)
    assert np.abs(one[1] - arrays[0]).max() > 0  # the step did move them


@pytest.mark.parametrize("where", [0, 40_000, -1])
def test_optimizer_split_reports_a_non_finite_gradient_anywhere(where):
    p, g, s1, s2 = _state(np.random.default_rng(0), 80_001)
    g[where] = np.nan
    for threads in (1, 2):
        chk, *_ = _step("adam", (p, g, s1, s2), threads)
        assert not np.isfinite(chk)


@pytest.mark.parametrize("d", [1, 13, 784])
@pytest.mark.parametrize("m", [1, 7, 128])
def test_gather_equals_fancy_indexing(d, m):
    rng = np.random.default_rng(d * m)
    X = rng.standard_normal((500, d)).astype(F)
    idx = rng.permutation(500)[:m]
    for threads in (1, 2):
        out = np.full((m, d), np.nan, F)
        with threadpool_limits(threads, user_api="blas"):
            pool.get().gather(X, idx, out)
        np.testing.assert_array_equal(out, X[idx])


@pytest.mark.parametrize("bad", [0, 33_333, 99_999])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_finite_check_finds_one_bad_value_anywhere(bad, value):
    x = np.random.default_rng(1).standard_normal(100_000).astype(F)
    assert pool.get().finite_check(x) == 0
    x[bad] = value
    for threads in (1, 2):
        with threadpool_limits(threads, user_api="blas"):
            assert not np.isfinite(pool.get().finite_check(x))


def test_fit_runs_its_optimizer_and_gather_through_the_pool(monkeypatch):
    calls = {"optimizer": 0, "gather": 0}
    P = type(pool.get())
    for name in calls:
        original = getattr(P, name)

        def counted(self, *args, _name=name, _original=original):
            calls[_name] += 1
            return _original(self, *args)

        monkeypatch.setattr(P, name, counted)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 300)).astype(F)
    y = rng.integers(0, 3, 256)
    model = vn.Sequential([L.Dense(300, 128), L.ReLU(), L.Dense(128, 3)])
    assert model.n_params >= pool.MIN_ELEMENTS
    model.fit(X, y, epochs=2, batch_size=64, verbose=0)
    assert calls == {"optimizer": 8, "gather": 8}


def test_training_agrees_for_any_thread_count():
    """vecnn's own kernels are thread-count independent bit for bit (the tests above); the BLAS's
    matrix products are not (OpenBLAS splits the sums differently on 1 and 2 threads with some
    kernels, e.g. OPENBLAS_CORETYPE=Haswell), so whole trainings agree to rounding only."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((512, 64)).astype(F)
    y = rng.integers(0, 4, 512)
    weights = []
    for threads in (1, 2):
        with threadpool_limits(threads, user_api="blas"):
            model = vn.Sequential([L.Dense(64, 512), L.ReLU(), L.Dense(512, 4)])
            start = model.flat_params.copy()
            model.fit(X, y, epochs=2, batch_size=128, verbose=0, seed=0)
        assert np.abs(model.flat_params - start).max() > 1e-3  # it did train
        weights.append(model.flat_params.copy())
    np.testing.assert_allclose(*weights, rtol=1e-4, atol=1e-5)


def test_no_pool_without_kernels_or_without_the_blas_function(monkeypatch):
    monkeypatch.setattr(kernels, "enabled", False)
    assert pool.get() is None
    monkeypatch.setattr(kernels, "enabled", True)
    monkeypatch.setattr(pool, "_find_functions", lambda: None)
    monkeypatch.setattr(pool, "_pool", kernels.Lazy(pool._build))
    assert pool.get() is None
    # training still works, on one thread
    model = vn.Sequential([L.Dense(4, 3)])
    model.fit(np.ones((8, 4), F), np.zeros(8, int), epochs=1, verbose=0)
