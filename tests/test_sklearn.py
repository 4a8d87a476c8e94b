"""VecnnClassifier and VecnnRegressor as scikit-learn estimators: pipelines, grid search, pickling,
partial_fit, warm_start, early stopping, weights, the L2 penalty, image models, the regressor
against MLPRegressor. (scikit-learn's own check_estimator suite: tests/test_sklearn_checks.py.)"""

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

import joblib  # noqa: E402  (a dependency of scikit-learn)
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.neural_network import MLPRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler  # noqa: E402
from sklearn.utils.class_weight import compute_class_weight  # noqa: E402

import vecnn as vn  # noqa: E402
from vecnn.sklearn import VecnnClassifier, VecnnRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def data():
    X_train, y_train, X_test, y_test = vn.data.load("digits")  # (n, 1, 8, 8) in [0, 1]
    return X_train.reshape(len(X_train), -1), y_train, X_test.reshape(len(X_test), -1), y_test


def blobs(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.normal(size=(n, 4)).astype(np.float32) + 3.0 * y[:, None]
    return X, y


def test_fits_digits_with_string_labels():
    X, y, Xt, yt = data()
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    clf = VecnnClassifier((64,), max_iter=15, batch_size=32, random_state=0).fit(X, names[y])
    assert list(clf.classes_) == sorted(names)
    assert clf.score(Xt, names[yt]) > 0.93
    proba = clf.predict_proba(Xt)
    assert proba.shape == (len(Xt), 10) and np.allclose(proba.sum(1), 1, atol=1e-6)
    assert np.array_equal(clf.classes_[proba.argmax(1)], clf.predict(Xt))
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(Xt)), proba, rtol=1e-6)
    assert clf.n_iter_ == len(clf.loss_curve_) == 15 and clf.loss_curve_[-1] < clf.loss_curve_[0]


def test_deprecated_names_warn_and_mean_the_new_ones():
    X, y, Xt, _ = data()
    new = VecnnClassifier((16,), max_iter=2, learning_rate_init=3e-3, random_state=4).fit(X, y)
    with pytest.warns(FutureWarning) as caught:
        old = VecnnClassifier(hidden=(16,), epochs=2, lr=3e-3, seed=4).fit(X, y)
    said = sorted(str(w.message).split(": ")[1].split(" is ")[0] for w in caught if w.category is FutureWarning)
    assert said == ["epochs=", "hidden=", "lr=", "seed="]
    assert "use hidden_layer_sizes=" in str(caught[0].message) or "use max_iter=" in str(caught[0].message)
    np.testing.assert_array_equal(old.predict_proba(Xt), new.predict_proba(Xt))
    assert old.n_iter_ == 2


def test_clone_and_cross_validation():
    X, y, *_ = data()
    clf = VecnnClassifier((32,), max_iter=20, batch_size=32, learning_rate_init=1e-2, random_state=3)
    assert clone(clf).get_params() == clf.get_params()
    pipe = make_pipeline(FunctionTransformer(lambda a: a * 2.0), clf)
    scores = cross_val_score(pipe, X[:600], y[:600], cv=3)
    assert scores.shape == (3,) and scores.min() > 0.7


def test_same_seed_same_model_and_refusals():
    X, y, Xt, _ = data()
    a = VecnnClassifier((16,), max_iter=2, random_state=0).fit(X, y).predict_proba(Xt)
    b = VecnnClassifier((16,), max_iter=2, random_state=0).fit(X, y).predict_proba(Xt)
    c = VecnnClassifier((16,), max_iter=2, random_state=1).fit(X, y).predict_proba(Xt)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    with pytest.raises(NotFittedError):
        VecnnClassifier().predict(Xt)
    with pytest.raises(ValueError, match="at least 2 classes"):
        VecnnClassifier().fit(X[:5], np.zeros(5))
    with pytest.raises(ValueError, match="solver.*'lbfgs' is not offered"):
        VecnnClassifier(solver="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        VecnnClassifier(hidden_layer_sizes=(0,)).fit(X, y)
    with pytest.raises(ValueError, match="input_shape=\\(1, 9, 9\\) holds 81 values.*64 features"):
        VecnnClassifier(input_shape=(1, 9, 9)).fit(X, y)
    with pytest.raises(ValueError, match="early_stopping"):
        VecnnClassifier(early_stopping=True).partial_fit(X, y, classes=np.arange(10))
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="Sparse data was passed"):
        VecnnClassifier().fit(sparse.csr_matrix(X), y)


def test_pipeline_in_grid_search_pickles_with_joblib(tmp_path):
    X, y, Xt, yt = data()
    clf = VecnnClassifier(max_iter=15, batch_size=32, learning_rate_init=3e-3, random_state=0)
    pipe = make_pipeline(StandardScaler(), clf)
    search = GridSearchCV(pipe, {"vecnnclassifier__hidden_layer_sizes": [(16,), (32,)]}, cv=2)
    search.fit(X[:400], y[:400])
    assert search.best_params_["vecnnclassifier__hidden_layer_sizes"] in [(16,), (32,)]
    path = tmp_path / "search.joblib"
    joblib.dump(search.best_estimator_, path)
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(Xt), search.best_estimator_.predict_proba(Xt))
    assert loaded.score(Xt, yt) == search.best_estimator_.score(Xt, yt) > 0.8
    # a reloaded estimator trains on as the original does (warm_start: weights and optimizer state)
    warm = VecnnClassifier((8,), max_iter=2, warm_start=True, random_state=0).fit(X, y)
    copy = pickle.loads(pickle.dumps(warm))
    np.testing.assert_array_equal(copy.fit(X, y).predict_proba(Xt), warm.fit(X, y).predict_proba(Xt))
    assert copy.n_iter_ == 4 and len(pickle.dumps(warm)) < 4 * 4 * warm.model_.n_params + 20000
    # the classes pickle by reference to the module (they are module-level)
    reg = pickle.loads(pickle.dumps(VecnnRegressor((4,), max_iter=2).fit(X[:50], y[:50].astype(float))))
    assert type(reg) is VecnnRegressor and reg.predict(Xt[:3]).shape == (3,)


def test_partial_fit_equals_fit_epochs_and_learns_over_chunks():
    X, y, Xt, yt = data()
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        VecnnClassifier().partial_fit(X, y)
    kw = dict(hidden_layer_sizes=(32,), shuffle=False, random_state=2, batch_size=64)
    inc = VecnnClassifier(**kw)
    for _ in range(3):
        inc.partial_fit(X, y, classes=np.arange(10))
    full = VecnnClassifier(max_iter=3, n_iter_no_change=100, **kw).fit(X, y)
    np.testing.assert_array_equal(inc.predict_proba(Xt), full.predict_proba(Xt))
    assert inc.n_iter_ == 3 and inc.loss_curve_ == full.loss_curve_
    # chunks: the first call names all classes, later ones may lack some
    chunks = VecnnClassifier((32,), batch_size=32, learning_rate_init=3e-3, random_state=0)
    order = np.argsort(y, kind="stable")[: len(y) // 2]  # a chunk of the first five classes only
    chunks.partial_fit(X[order[:200]], y[order[:200]], classes=np.arange(10))
    for _ in range(5):
        for part in np.array_split(np.arange(len(X)), 4):
            chunks.partial_fit(X[part], y[part])
    assert chunks.n_iter_ == 21 and chunks.score(Xt, yt) > 0.9
    with pytest.raises(ValueError, match="classes of the first call"):
        chunks.partial_fit(X[:5], np.full(5, 11))


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_warm_start_continues_with_the_optimizer_state(shuffle, solver):
    X, y, Xt, _ = data()
    kw = dict(hidden_layer_sizes=(16,), shuffle=shuffle, solver=solver, random_state=5, n_iter_no_change=100)
    warm = VecnnClassifier(max_iter=3, warm_start=True, **kw).fit(X, y)
    assert warm.n_iter_ == 3
    warm.fit(X, y)
    once = VecnnClassifier(max_iter=6, **kw).fit(X, y)
    assert warm.n_iter_ == 6 and warm.loss_curve_ == once.loss_curve_
    np.testing.assert_array_equal(warm.predict_proba(Xt), once.predict_proba(Xt))
    assert warm.model_.optimizer.t == once.model_.optimizer.t == 6 * -(-len(X) // 200)
    # without warm_start, fit starts afresh
    cold = VecnnClassifier(max_iter=3, **kw).fit(X, y)
    first = cold.predict_proba(Xt)
    np.testing.assert_array_equal(cold.fit(X, y).predict_proba(Xt), first)
    assert cold.n_iter_ == 3


def test_early_stopping_stops_and_keeps_the_best_weights():
    X, y, Xt, yt = data()
    tol, patience = 1e-3, 3
    clf = VecnnClassifier(
        (32,),
        early_stopping=True,
        validation_fraction=0.2,
        n_iter_no_change=patience,
        tol=tol,
        learning_rate_init=1e-2,
        max_iter=200,
        random_state=0,
    ).fit(X, y)
    scores = clf.validation_scores_
    assert clf.n_iter_ < 200 and len(scores) == clf.n_iter_ == len(clf.loss_curve_)
    assert clf.best_validation_score_ == max(scores) and clf.best_loss_ is None
    # the stopping rule: the last patience + 1 epochs all fell short of the best before them by tol
    best_before = max(scores[: -(patience + 1)])
    assert all(s < best_before + tol for s in scores[-(patience + 1) :])
    assert clf.score(Xt, yt) > 0.9
    # the weights kept are those of the best epoch: retraining to exactly that epoch gives them
    best_epoch = int(np.argmax(scores)) + 1
    again = clone(clf).set_params(early_stopping=True, max_iter=best_epoch, n_iter_no_change=1000).fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(Xt), clf.predict_proba(Xt))


def test_sample_weight_and_class_weight():
    X, y = blobs(30)
    kw = dict(hidden_layer_sizes=(8,), max_iter=5, shuffle=False, random_state=0)  # one full batch per epoch
    w = np.where(np.arange(30) % 4 == 0, 2.0, 1.0)
    weighted = VecnnClassifier(**kw).fit(X, y, sample_weight=w)
    rep = np.repeat(np.arange(30), w.astype(int))
    repeated = VecnnClassifier(**kw).fit(X[rep], y[rep])
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-5)
    # zero weights: as if the rows were not there
    keep = np.arange(30) % 5 != 0
    zero = VecnnClassifier(**kw).fit(X, y, sample_weight=keep.astype(float))
    removed = VecnnClassifier(**kw).fit(X[keep], y[keep])
    np.testing.assert_array_equal(zero.predict_proba(X), removed.predict_proba(X))
    # class_weight: the per-class factors times sample_weight
    table = {0: 1.0, 1: 3.0, 2: 0.5}
    by_class = VecnnClassifier(class_weight=table, **kw).fit(X, y, sample_weight=w)
    by_sample = VecnnClassifier(**kw).fit(X, y, sample_weight=w * np.array([1.0, 3.0, 0.5])[y])
    np.testing.assert_array_equal(by_class.predict_proba(X), by_sample.predict_proba(X))
    Xi, yi = X[:20], y[:20]  # unbalanced: 7, 7, 6
    balanced = VecnnClassifier(class_weight="balanced", **kw).fit(Xi, yi)
    factors = compute_class_weight("balanced", classes=np.arange(3), y=yi)
    manual = VecnnClassifier(**kw).fit(Xi, yi, sample_weight=factors[yi])
    np.testing.assert_array_equal(balanced.predict_proba(Xi), manual.predict_proba(Xi))
    with pytest.raises(ValueError, match="balanced' is not supported for partial_fit"):
        VecnnClassifier(class_weight="balanced").partial_fit(X, y, classes=np.arange(3))


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
def test_alpha_is_scikit_learns_penalty(activation):
    """One full-batch SGD step: alpha adds alpha * W / n to the weights' gradient (not the
    biases'), and alpha / 2 * ||W||^2 / n to the loss, computed here in float64 by hand."""
    X, y = blobs(24)
    n, lr, alpha = len(X), 0.1, 0.5
    kw = dict(hidden_layer_sizes=(5,), activation=activation, solver="sgd", momentum=0.0, max_iter=1)
    kw.update(learning_rate_init=lr, shuffle=False, random_state=1)
    init = VecnnClassifier(**{**kw, "learning_rate_init": 1e-30}).fit(X, y).model_  # (nearly) the initial weights
    plain = VecnnClassifier(alpha=0.0, **kw).fit(X, y).model_
    penal = VecnnClassifier(alpha=alpha, **kw).fit(X, y).model_
    for i, layer in enumerate(init.layers):
        for k, W0 in layer.params.items():
            step = penal.layers[i].params[k].astype(np.float64) - plain.layers[i].params[k]
            expected = -lr * alpha * W0.astype(np.float64) / n if k == "W" else 0 * W0
            np.testing.assert_allclose(step, expected, atol=2e-7)
    # the loss: mean cross-entropy of the initial weights plus the penalty, by hand in float64
    h = X.astype(np.float64)
    for layer in init.layers:
        if "W" in layer.params:
            h = h @ layer.params["W"].astype(np.float64) + layer.params["b"]
        else:
            h = {"ReLU": lambda a: np.maximum(a, 0), "Tanh": np.tanh, "Sigmoid": lambda a: 1 / (1 + np.exp(-a))}[
                type(layer).__name__
            ](h)
    log_p = h - h.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    ce = -log_p[np.arange(n), y].mean()
    sq = sum(float((l.params["W"].astype(np.float64) ** 2).sum()) for l in init.layers if "W" in l.params)
    penalized = VecnnClassifier(alpha=alpha, **{**kw, "learning_rate_init": 1e-30}).fit(X, y)
    np.testing.assert_allclose(penalized.loss_curve_[0], ce + 0.5 * alpha * sq / n, rtol=1e-5)


def test_cnn_on_digits(tmp_path):
    X, y, Xt, yt = data()
    spec = "conv:8:3:1:1,relu,maxpool:2,flatten,dense:32,relu,dense:10"
    clf = VecnnClassifier(architecture=spec, input_shape=(1, 8, 8), max_iter=4, batch_size=32, random_state=0)
    clf.set_params(learning_rate_init=3e-3).fit(X, y)
    layers = [type(l).__name__ for l in clf.model_.layers]
    assert layers[0] == "Conv2D" and layers.count("Dense") == 2  # the spec's dense:10 is the output layer
    assert clf.score(Xt, yt) > 0.9
    preset = VecnnClassifier(architecture="cnn", input_shape=(1, 8, 8), max_iter=2, batch_size=32, random_state=0)
    assert preset.set_params(learning_rate_init=3e-3).fit(X, y).score(Xt, yt) > 0.95
    assert "Conv2D" in [type(l).__name__ for l in preset.model_.layers]
    # the network saves as a vecnn model file that predicts the same (to float32 precision)
    path = tmp_path / "digits-cnn.vecnn"
    clf.model_.save(path)
    loaded = vn.load(path)
    assert loaded.class_names == [str(c) for c in clf.classes_]
    np.testing.assert_allclose(loaded.predict_proba(Xt.reshape(-1, 1, 8, 8)), clf.predict_proba(Xt), atol=1e-5)
    with pytest.raises(ValueError, match="input_shape=\\(C, H, W\\)"):
        VecnnClassifier(architecture="cnn").fit(X, y)


def test_regressor_close_to_mlp_regressor():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(400, 3))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.05 * rng.normal(size=400)
    Xt, yt = X[300:], y[300:]
    X, y = X[:300], y[:300]
    kw = dict(hidden_layer_sizes=(32, 32), max_iter=150, batch_size=32, learning_rate_init=3e-3, random_state=0)
    ours = VecnnRegressor(**kw).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = MLPRegressor(**kw).fit(X, y)
    r2, r2_ref = ours.score(Xt, yt), ref.score(Xt, yt)
    print(f"R^2: VecnnRegressor {r2:.4f}, MLPRegressor {r2_ref:.4f}")
    assert r2_ref > 0.8 and r2 > r2_ref - 0.05, (r2, r2_ref)
    assert ours.predict(Xt).shape == (100,) and ours.n_outputs_ == 1
    # several outputs
    Y = np.stack([y, -2 * y], axis=1)
    multi = VecnnRegressor((16,), max_iter=30, random_state=0).fit(X, Y)
    assert multi.predict(Xt).shape == (100, 2) and multi.n_outputs_ == 2
    # early stopping scores R^2
    es = VecnnRegressor((16,), early_stopping=True, max_iter=300, random_state=0, n_iter_no_change=5, tol=1e-3)
    es.set_params(learning_rate_init=1e-2, batch_size=32).fit(X, y)
    assert es.n_iter_ < 300 and max(es.validation_scores_) == es.best_validation_score_ <= 1


def test_regressor_loss_is_scikit_learns_squared_loss(capsys):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(20, 3)), rng.normal(size=20)
    init = VecnnRegressor((4,), max_iter=1, learning_rate_init=1e-30, alpha=0.0, random_state=0, shuffle=False)
    init.set_params(verbose=True).fit(X, y)
    assert capsys.readouterr().out == f"Iteration 1, loss = {init.loss_curve_[0]:.8f}\n"  # as MLPRegressor prints
    pred = init.predict(X).astype(np.float64)  # the weights moved by ~1e-30: the initial predictions
    np.testing.assert_allclose(init.loss_curve_[0], ((pred - y) ** 2).mean() / 2, rtol=1e-5)


def test_feature_names_from_pandas():
    pd = pytest.importorskip("pandas")
    X, y = blobs(30)
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    clf = VecnnClassifier((4,), max_iter=2).fit(df, y)
    assert list(clf.feature_names_in_) == ["a", "b", "c", "d"]
    with pytest.warns(UserWarning, match="feature names"):
        clf.predict(X)


def test_without_scikit_learn_vecnn_imports_and_the_classes_say_what_to_install():
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "import vecnn, vecnn.sklearn as s\n"
        "try:\n"
        "    s.VecnnClassifier()\n"
        "except ImportError as e:\n"
        "    print('ImportError:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ImportError:" in out.stdout and "pip install 'vecnn[sklearn]'" in out.stdout


def test_predictions_do_not_depend_on_the_other_rows():
    """float32 products round differently with a row's place in the matrix (and one row alone
    takes BLAS's matrix-vector path), by ~1e-7; predictions apply the float32 weights in float64,
    where a row's outputs move by ~1e-16 at most, alone, in any order or in any company."""
    X, y, Xt, _ = data()
    clf = VecnnClassifier((32,), max_iter=2, random_state=0).fit(X, y)
    Xs = Xt[:300]
    whole = clf.predict_proba(Xs)
    alone = np.concatenate([clf.predict_proba(Xs[i : i + 1]) for i in range(0, 300, 3)])
    np.testing.assert_allclose(alone, whole[::3], rtol=1e-12, atol=0)
    order = np.random.default_rng(0).permutation(300)
    np.testing.assert_allclose(clf.predict_proba(Xs[order]), whole[order], rtol=1e-12, atol=0)
    parts = np.concatenate([clf.predict_proba(c) for c in np.array_split(Xs, 7)])
    np.testing.assert_allclose(parts, whole, rtol=1e-12, atol=0)
    reg = VecnnRegressor((8,), max_iter=2, random_state=0).fit(X, y.astype(float))
    np.testing.assert_allclose(reg.predict(Xs[order]), reg.predict(Xs)[order], rtol=1e-12, atol=0)
    # the weights predicting are the trained ones: the float32 network gives the same to float32 precision
    logits32 = clf.model_.predict(Xs)
    np.testing.assert_allclose(np.log(whole) - np.log(whole)[:, :1], logits32 - logits32[:, :1], atol=1e-4)


@pytest.mark.parametrize("solver, cls", [("adamw", "AdamW"), ("rmsprop", "RMSProp"), ("sgd", "SGD"), ("adam", "Adam")])
def test_solvers_dropout_schedule_standardize(solver, cls):
    X, y = blobs(90)
    kw = dict(hidden_layer_sizes=(16,), solver=solver, max_iter=40, batch_size=16, random_state=0)
    kw["learning_rate_init"] = 0.05 if solver == "sgd" else 3e-3
    clf = VecnnClassifier(dropout=0.2, schedule="cosine", standardize=True, **kw).fit(X * 10 + 5, y)
    assert type(clf.model_.optimizer).__name__ == cls
    names = [type(l).__name__ for l in clf.model_.layers]
    assert names[0] == "Standardize" and "Dropout" in names
    assert clf.model_.optimizer.current_lr() < 1e-3 * kw["learning_rate_init"]  # cosine decayed to ~0
    assert clf.score(X * 10 + 5, y) > 0.9
    np.testing.assert_array_equal(clf.predict_proba(X), clf.predict_proba(X))  # no dropout at inference
    plain = VecnnClassifier(**kw).fit(X, y)
    assert [type(l).__name__ for l in plain.model_.layers] == ["Dense", "ReLU", "Dense"]


def test_batch_norm_spec_and_refusals():
    X, y = blobs(33)  # 33 = 2 * 16 + 1: the last batch of one sample joins the one before
    clf = VecnnClassifier(architecture="dense:16,bn,relu", batch_size=16, max_iter=3, random_state=0).fit(X, y)
    assert "BatchNorm1D" in [type(l).__name__ for l in clf.model_.layers]
    assert np.isfinite(clf.loss_curve_).all() and clf.predict_proba(X).shape == (33, 3)
    with pytest.raises(ValueError, match="BatchNorm learns its statistics from at least 2 samples"):
        VecnnClassifier(architecture="dense:16,bn,relu", batch_size=1).fit(X, y)
    with pytest.raises(ValueError, match="ends in softmax"):
        VecnnClassifier(architecture="dense:16,relu,dense:3,softmax").fit(X, y)
    with pytest.raises(ValueError, match="model spec"):
        VecnnClassifier(architecture="dense:16,frobnicate").fit(X, y)


def test_n_jobs_sets_blas_threads_for_the_fit_and_puts_them_back():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    X, y = blobs(60)
    before = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    seen = []

    class Spy(VecnnClassifier):  # records the BLAS threads in force while an epoch trains
        def _train_epoch(self, *args, **kwargs):
            seen.append(max(i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"))
            return super()._train_epoch(*args, **kwargs)

    Spy((4,), max_iter=2, random_state=0).fit(X, y)
    assert seen == [1, 1]
    auto = VecnnClassifier((4,), max_iter=2, random_state=0, n_jobs="auto").fit(X, y)
    fixed = VecnnClassifier((4,), max_iter=2, random_state=0, n_jobs=-1).fit(X, y)
    np.testing.assert_allclose(auto.predict_proba(X), fixed.predict_proba(X), rtol=1e-4)  # to rounding
    after = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert after == before
    with pytest.raises(ValueError, match="n_jobs"):
        VecnnClassifier(n_jobs=0).fit(X, y)
