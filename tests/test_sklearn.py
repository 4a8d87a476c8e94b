"""VecnnClassifier behaves as a scikit-learn estimator."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import vecnn as vn
from vecnn.sklearn import VecnnClassifier


def data():
    X_train, y_train, X_test, y_test = vn.data.load("digits")
    return X_train.reshape(len(X_train), -1), y_train, X_test.reshape(len(X_test), -1), y_test


def test_fits_digits_with_string_labels():
    X, y, Xt, yt = data()
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    clf = VecnnClassifier(hidden=(64,), epochs=15, batch_size=32).fit(X, names[y])
    assert list(clf.classes_) == sorted(names)
    assert clf.score(Xt, names[yt]) > 0.93
    proba = clf.predict_proba(Xt)
    assert proba.shape == (len(Xt), 10) and np.allclose(proba.sum(1), 1, atol=1e-5)


def test_clone_and_cross_validation():
    X, y, *_ = data()
    clf = VecnnClassifier(hidden=(32,), epochs=20, batch_size=32, lr=1e-2, seed=3)
    assert clone(clf).get_params() == clf.get_params()
    pipe = make_pipeline(FunctionTransformer(lambda a: a * 2.0), clf)
    scores = cross_val_score(pipe, X[:600], y[:600], cv=3)
    assert scores.shape == (3,) and scores.min() > 0.7


def test_same_seed_same_model_and_unfitted_error():
    X, y, Xt, _ = data()
    a = VecnnClassifier(hidden=(16,), epochs=2).fit(X, y).predict_proba(Xt)
    b = VecnnClassifier(hidden=(16,), epochs=2).fit(X, y).predict_proba(Xt)
    np.testing.assert_array_equal(a, b)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        VecnnClassifier().predict(Xt)
    with pytest.raises(ValueError, match="at least 2 classes"):
        VecnnClassifier().fit(X[:5], np.zeros(5))
