"""Sequential.fit/predict under awkward input: BatchNorm and a last batch of one, state restored
after divergence, one sample without its batch axis, labels beyond int64, Ctrl-C while numba
is first imported."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import vecnn as vn
from vecnn import layers as L

F = np.float32


def _bn_model(seed=0):
    return vn.Sequential([L.Dense(4, 8), L.BatchNorm1D(8), L.ReLU(), L.Dense(8, 2)], seed=seed)


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)).astype(F), rng.integers(0, 2, n)


class Sizes(vn.callbacks.Callback):
    def __init__(self):
        self.sizes = []

    def on_batch_end(self, step, logs=None):
        self.sizes.append(logs["size"])


def test_batch_norm_folds_a_last_batch_of_one_into_the_batch_before():
    X, y = _data(33)
    sizes = Sizes()
    _bn_model().fit(X, y, batch_size=32, epochs=2, verbose=0, callbacks=[sizes])
    assert sizes.sizes == [33, 33]
    sizes = Sizes()  # without BatchNorm, batches are as asked
    vn.Sequential([L.Dense(4, 2)]).fit(X, y, batch_size=32, epochs=1, verbose=0, callbacks=[sizes])
    assert sizes.sizes == [32, 1]
    sizes = Sizes()  # a remainder of two is a batch of its own
    _bn_model().fit(*_data(34), batch_size=32, epochs=1, verbose=0, callbacks=[sizes])
    assert sizes.sizes == [32, 2]


def test_batch_norm_inside_a_residual_block_folds_too():
    block = L.Residual([L.Dense(4, 4), L.BatchNorm1D(4), L.ReLU()])
    sizes = Sizes()
    vn.Sequential([block, L.Dense(4, 2)]).fit(*_data(17), batch_size=8, verbose=0, callbacks=[sizes])
    assert sizes.sizes == [8, 9]


@pytest.mark.parametrize("n,batch_size", [(1, 32), (40, 1)])
def test_batch_norm_with_one_sample_per_batch_is_refused_up_front(n, batch_size):
    with pytest.raises(ValueError, match=r"BatchNorm1D.*at least 2 samples per batch"):
        _bn_model().fit(*_data(n), batch_size=batch_size, verbose=0)


def test_divergence_restores_batch_norm_statistics_with_the_weights():
    X, y = _data(64)
    model = _bn_model()
    model.fit(X, y, batch_size=16, epochs=1, verbose=0)
    before = model.get_weights()
    huge = np.random.default_rng(1).uniform(-3e38, 3e38, X.shape).astype(F)  # finite inputs near the limit
    with np.errstate(over="ignore"), pytest.raises(FloatingPointError, match="step 1"):
        model.fit(huge, y, batch_size=16, epochs=1, verbose=0)
    after = model.get_weights()
    np.testing.assert_array_equal(after["params"], before["params"])
    for a, b in zip(before["state"], after["state"]):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])  # running_var was inf before the fix


@pytest.mark.parametrize("lr", [1e30, 1e38])
def test_a_model_never_holds_a_non_finite_value_after_divergence(lr):
    X, y = _data(64)
    model = _bn_model()
    with np.errstate(over="ignore"), pytest.raises(FloatingPointError):
        model.fit(X, y, optimizer=vn.optim.SGD(lr=lr), batch_size=16, epochs=3, verbose=0)
    w = model.get_weights()
    assert np.isfinite(w["params"]).all()
    assert all(np.isfinite(v).all() for state in w["state"] for v in state.values())


def test_one_image_without_its_batch_axis_is_refused_after_fit():
    X, y, *_ = vn.data.load("digits")
    model = vn.Sequential([L.Flatten(), L.Dense(64, 10)])
    model.fit(X[:64], y[:64], verbose=0)
    with pytest.raises(ValueError, match=r"received \(1, 8, 8\).*X\[None\]"):
        model.predict(X[0])
    assert model.predict(X[:1]).shape == (1, 10)
    with pytest.raises(ValueError, match=r"\(n, 1, 8, 8\)"):
        model.evaluate(X[:5].reshape(5, 64), y[:5])


@pytest.mark.parametrize(
    "labels", [np.array([0, 2**63], np.uint64), np.array([0, 2**64 - 1], np.uint64), np.array([0.0, 1e19])]
)
def test_labels_beyond_int64_are_refused_not_wrapped(labels):
    model = vn.Sequential([L.Dense(4, 3)])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*received label"):
        model.fit(np.ones((2, 4), F), labels, verbose=0)


def test_ctrl_c_while_numba_is_first_imported_leaves_training_possible():
    """Interrupt ``import numba`` part way through (as Ctrl-C in the first 0.06 s of the first
    fit does); the next fit must train, with the compiled kernels."""
    pytest.importorskip("numba")
    script = textwrap.dedent("""
        import sys, importlib.abc
        import numpy as np
        import vecnn as vn
        from vecnn import kernels, layers as L
        assert "numba" not in sys.modules

        class Interrupt(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "numba.core.typing":          # part way through `import numba`
                    sys.meta_path.remove(self)
                    raise KeyboardInterrupt
                return None

        sys.meta_path.insert(0, Interrupt())
        try:
            vn.Sequential([L.Dense(4, 3)]).fit(np.ones((8, 4), np.float32), np.zeros(8, int), verbose=0)
        except KeyboardInterrupt:
            print("interrupted")
        model = vn.Sequential([L.Dense(4, 3)])
        model.fit(np.ones((8, 4), np.float32), np.zeros(8, int), epochs=1, verbose=0)
        print("trained; kernels:", kernels.get() is not None)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["interrupted", "trained;", "kernels:", "True"]


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s["layers"].update({"0": s["shuffle"]}),  # a Dense has no generator
        lambda s: s["layers"].update({"9": s["shuffle"]}),  # no such layer
        lambda s: s.update(shuffle={"bit_generator": "PCG64", "state": "x"}),
        lambda s: s.update(augment=None),
        lambda s: s.update(layers=[]),
    ],
)
def test_rng_states_that_do_not_fit_are_a_value_error_and_change_nothing(change):
    model = vn.Sequential([L.Dense(4, 4), L.Dropout(0.5), L.Dense(4, 2)])
    states = model.rng_states()
    before = model.rng_states()
    change(states)
    with pytest.raises(ValueError, match="rng states"):
        model.set_rng_states(states)
    assert model.rng_states() == before


@pytest.mark.parametrize("workers,match", [(100_000, "at most 256"), (257, "at most 256")])
def test_thousands_of_workers_are_refused_at_once(workers, match):
    model = vn.Sequential([L.Dense(4, 2)])
    with pytest.raises(ValueError, match=match):
        model.fit(*_data(64), batch_size=16, workers=workers, verbose=0)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: vn.Sequential(None), "Sequential: expected a list of layers"),
        (lambda: vn.Sequential({"a": L.Dense(4, 2)}), "Sequential: expected a list of layers"),
        (lambda: vn.Sequential([L.Dense(4, 2)], seed=-1), "Sequential: seed"),
        (lambda: vn.Sequential([L.Dense(4, 2)], seed="a"), "Sequential: seed"),
        (lambda: vn.Sequential([L.Dense(4, 2)]).fit(*_data(8), seed=-1, verbose=0), "fit: seed"),
        (lambda: vn.Sequential([L.Dense(4, 2)]).fit(*_data(8), validation_split="0.1", verbose=0), "validation_split"),
        (lambda: vn.Sequential([L.Dense(4, 2)]).fit(*_data(8), callbacks=object(), verbose=0), "callbacks"),
        (lambda: vn.Sequential([L.Dense(4, 2)]).save(None), "save: expected a file path"),
        (lambda: vn.load(None), "expected the path of a model file"),
        (lambda: vn.load(5), "expected the path of a model file"),
        (lambda: vn.data.load_arrays(None), "load_arrays: expected the path"),
    ],
)
def test_wrong_types_at_the_api_edge_are_value_errors_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_outputs_that_overflow_are_refused_not_returned():
    model = vn.Sequential([L.Dense(4, 3)])
    model.flat_params[...] = 3e38  # finite, but any sum of them overflows
    X = np.ones((5, 4), F)
    with pytest.raises(ValueError, match=r"predict: the model's outputs overflowed.*5 sample\(s\), the first X\[0\]"):
        model.predict(X)
    with pytest.raises(ValueError, match="evaluate: the model's outputs overflowed"):
        model.evaluate(X, np.zeros(5, int))


def test_loaded_state_out_of_range_is_refused(tmp_path):
    X, y = _data(64)
    std = L.Standardize().adapt(X)
    model = vn.Sequential([std, L.Dense(4, 8), L.BatchNorm1D(8), L.Dense(8, 2)])
    model.fit(X, y, verbose=0)
    from vecnn import io

    for layer, key, value in ((0, "std", 0.0), (0, "std", -1.0), (2, "running_var", -1.0)):
        model.layers[layer].state[key][0] = value
        path = tmp_path / f"m{layer}{value}.vecnn"
        io.save_model(model, path)  # a file as a buggy writer or an editor would leave it
        with pytest.raises(ValueError, match=f"layer {layer}: .*{key}"):
            vn.load(path)
        model.layers[layer].state[key][0] = 1.0


@pytest.mark.parametrize("target", ["/dev/null", "dir"])
def test_saving_over_a_device_or_a_directory_is_refused(tmp_path, target):
    import os
    import stat

    path = tmp_path if target == "dir" else target
    before = os.stat(path)
    with pytest.raises(ValueError, match="not a regular file"):
        vn.Sequential([L.Dense(4, 2)]).save(path)
    after = os.stat(path)
    assert stat.S_IFMT(after.st_mode) == stat.S_IFMT(before.st_mode)  # /dev/null is still a device


def test_the_memory_estimate_respects_an_address_space_limit():
    """`ulimit -v` caps what the process can allocate, whatever the machine has free."""
    code = textwrap.dedent("""
        import resource
        from vecnn import limits
        free = limits.available_memory()
        resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, resource.RLIM_INFINITY))
        capped = limits.available_memory()
        print(capped < 8 * 2**30, capped <= free)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True"]


def test_dense_backward_before_forward_is_a_value_error():
    with pytest.raises(ValueError, match="backward called before forward"):
        L.Dense(8, 3).backward(np.zeros((4, 3), F))


def test_a_tensor_foreign_to_vecnn_in_a_model_file_is_refused(tmp_path):
    from vecnn import io

    model = vn.Sequential([L.Dense(4, 2)])
    io.save_model(model, tmp_path / "m.vecnn", extra_tensors={"evil": np.zeros(3, F)})
    with pytest.raises(ValueError, match="'evil' is none of vecnn's"):
        vn.load(tmp_path / "m.vecnn")


def test_saving_under_a_file_names_the_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"f is a file, not a directory"):
        vn.Sequential([L.Dense(4, 2)]).save(tmp_path / "f" / "m.vecnn")
