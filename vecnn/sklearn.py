"""A scikit-learn estimator backed by vecnn: ``VecnnClassifier``.

It follows scikit-learn's conventions (constructor arguments stored as given, learned
attributes ending in ``_``, ``classes_`` in any label type), so ``clone``, ``Pipeline``,
``GridSearchCV`` and ``cross_val_score`` work with it. scikit-learn is an optional extra
(``pip install 'vecnn[sklearn]'``): it is imported when the class is first used, not when
vecnn is.

>>> from vecnn.sklearn import VecnnClassifier          # doctest: +SKIP
>>> clf = VecnnClassifier(hidden=(64,), epochs=30).fit(X, y)      # doctest: +SKIP
>>> clf.score(X_test, y_test)                          # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

_classes: dict = {}


def __getattr__(name):
    if name == "VecnnClassifier":
        if name not in _classes:
            _classes[name] = _build_classifier()
        return _classes[name]
    raise AttributeError(f"module 'vecnn.sklearn' has no attribute {name!r}")


def _build_classifier():
    try:
        from sklearn.base import BaseEstimator, ClassifierMixin
        from sklearn.utils.validation import check_is_fitted
    except ImportError:
        raise ImportError("vecnn.sklearn needs scikit-learn: pip install 'vecnn[sklearn]'") from None

    class VecnnClassifier(ClassifierMixin, BaseEstimator):
        """An MLP classifier trained by vecnn (whole-batch matrices, float32, seeded).

        Parameters
        ----------
        hidden : tuple of int
            Units of each hidden Dense-ReLU layer.
        dropout : float
            Dropout after each hidden layer.
        epochs, batch_size : int
        lr : float
            Adam learning rate (cosine-decayed over the run when ``schedule="cosine"``).
        schedule : {"cosine", "constant"}
        standardize : bool
            Standardize inputs per feature with training-set statistics (kept in the model).
        seed : int
        verbose : int
            As in ``Sequential.fit``.
        """

        def __init__(
            self,
            hidden=(256, 128),
            dropout=0.1,
            epochs=20,
            batch_size=128,
            lr=1e-3,
            schedule="cosine",
            standardize=True,
            seed=0,
            verbose=0,
        ):
            self.hidden = hidden
            self.dropout = dropout
            self.epochs = epochs
            self.batch_size = batch_size
            self.lr = lr
            self.schedule = schedule
            self.standardize = standardize
            self.seed = seed
            self.verbose = verbose

        def fit(self, X, y):
            from . import layers as L
            from . import optim, presets
            from .model import Sequential

            for name in ("epochs", "batch_size"):
                v = getattr(self, name)
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                    raise ValueError(f"VecnnClassifier: expected {name} to be a positive integer, received {v!r}")
            hidden = self.hidden
            if (
                isinstance(hidden, (str, bytes))
                or not hasattr(hidden, "__iter__")
                or not all(isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h >= 1 for h in hidden)
            ):
                raise ValueError(
                    f"VecnnClassifier: expected hidden to be a tuple of positive integers "
                    f"(units per hidden layer), received {hidden!r}"
                )
            X = np.asarray(X)
            y = np.asarray(y)
            if X.ndim < 2:
                raise ValueError(
                    f"VecnnClassifier.fit: expected X of shape (n_samples, n_features), received shape {X.shape}"
                )
            self.classes_, y_index = np.unique(y, return_inverse=True)
            if len(self.classes_) < 2:
                raise ValueError(f"VecnnClassifier.fit: need at least 2 classes, received {self.classes_.tolist()}")
            self.n_features_in_ = int(np.prod(X.shape[1:]))
            layers = presets.mlp(X.shape[1:], len(self.classes_), hidden=tuple(self.hidden), dropout=self.dropout)
            if self.standardize:
                layers = [L.Standardize(per="feature").adapt(X), *layers]
            self.model_ = Sequential(layers, seed=self.seed)
            steps = self.epochs * -(-len(X) // self.batch_size)
            opt = optim.Adam(lr=self.lr, schedule=optim.CosineLR(steps) if self.schedule == "cosine" else None)
            self.history_ = self.model_.fit(
                X,
                y_index,
                optimizer=opt,
                epochs=self.epochs,
                batch_size=self.batch_size,
                seed=self.seed,
                verbose=self.verbose,
            )
            return self

        def predict_proba(self, X):
            check_is_fitted(self, "model_")
            return self.model_.predict_proba(np.asarray(X))

        def predict(self, X):
            proba = self.predict_proba(X)
            return self.classes_[proba.argmax(axis=1)]

    VecnnClassifier.__module__ = __name__
    return VecnnClassifier
