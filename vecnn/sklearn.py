"""scikit-learn estimators backed by vecnn: ``VecnnClassifier`` and ``VecnnRegressor``.

They take ``MLPClassifier``'s / ``MLPRegressor``'s parameters where the two overlap
(``hidden_layer_sizes``, ``activation``, ``solver``, ``alpha``, ``batch_size``,
``learning_rate_init``, ``max_iter``, ``early_stopping``, ...) with the same meanings, and add
what those refuse: ``dropout``, the ``adamw`` and ``rmsprop`` solvers, ``class_weight``, and
convolutional networks on image rows (``input_shape=(1, 28, 28), architecture="cnn"`` or a
layer spec string such as ``"conv:8:3,relu,maxpool:2,flatten,dense:10"``). They pass
scikit-learn's ``check_estimator``, pickle (a fitted ``Pipeline`` saves with joblib), and work
in ``Pipeline``, ``GridSearchCV`` and ``cross_val_score``.

scikit-learn is an optional extra (``pip install 'vecnn[sklearn]'``): this module imports
without it, and constructing an estimator without it raises ``ImportError`` saying so.

The training loop is the one of ``MLPClassifier`` (``sklearn/neural_network/_multilayer_perceptron.py``,
``_fit_stochastic``), written over vecnn's flat parameter and gradient buffers: per batch the
loss is the (sample-weighted) mean ``sum_i w_i l_i / sum_i w_i`` plus
``alpha / 2 * ||W||^2 / sum_i w_i`` over the weight matrices and kernels (not the biases), as
in scikit-learn; an epoch's loss is the mean of its batches' losses weighted by their sizes;
training stops when the loss (or, with ``early_stopping``, the validation score) has not
improved by ``tol`` for ``n_iter_no_change`` epochs in a row.

>>> from sklearn.pipeline import make_pipeline                        # doctest: +SKIP
>>> from sklearn.preprocessing import StandardScaler                  # doctest: +SKIP
>>> from vecnn.sklearn import VecnnClassifier                         # doctest: +SKIP
>>> clf = make_pipeline(StandardScaler(), VecnnClassifier(hidden_layer_sizes=(64,)))  # doctest: +SKIP
>>> clf.fit(X, y).score(X_test, y_test)                              # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
import numbers
import os
import warnings

import numpy as np

from . import losses as _losses
from . import threads as _threads
from .backend import DTYPE

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

    _SKLEARN = True
except ImportError:  # the classes stay importable (and picklable by name); constructing one says what is missing

    class BaseEstimator:  # type: ignore[no-redef]
        pass

    class ClassifierMixin:  # type: ignore[no-redef]
        pass

    class RegressorMixin:  # type: ignore[no-redef]
        pass

    _SKLEARN = False

__all__ = ["VecnnClassifier", "VecnnRegressor"]

_MISSING = "vecnn.sklearn needs scikit-learn: pip install 'vecnn[sklearn]'"
_ACTIVATIONS = ("relu", "tanh", "logistic", "identity")
_SOLVERS = ("adam", "sgd", "adamw", "rmsprop")
#: deprecated name -> the parameter it stands for (kept for one release)
_ALIASES = {"hidden": "hidden_layer_sizes", "epochs": "max_iter", "lr": "learning_rate_init", "seed": "random_state"}


def _require_sklearn():
    if not _SKLEARN:
        raise ImportError(_MISSING)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


class _BaseVecnn(BaseEstimator):
    """What the classifier and the regressor share: parameters, model building, the training
    loop and prediction. Subclasses set how targets are encoded and scored."""

    _is_classifier = False

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate_init=0.001,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        dropout=0.0,
        n_jobs=None,
        schedule="constant",
        standardize=False,
        architecture=None,
        input_shape=None,
        hidden=None,
        epochs=None,
        lr=None,
        seed=None,
    ):
        _require_sklearn()
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dropout = dropout
        self.n_jobs = n_jobs
        self.schedule = schedule
        self.standardize = standardize
        self.architecture = architecture
        self.input_shape = input_shape
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.seed = seed

    # -- parameters ------------------------------------------------------------------------
    def _settings(self) -> dict:
        """The parameters, checked, with the deprecated aliases resolved (a FutureWarning each)."""
        name = type(self).__name__
        p = {k: getattr(self, k) for k in self.get_params(deep=False)}
        for old, new in _ALIASES.items():
            if p[old] is not None:
                warnings.warn(
                    f"{name}: {old}= is deprecated and will be removed in the next release; use {new}= "
                    f"(the name scikit-learn's MLP estimators use)",
                    FutureWarning,
                    stacklevel=3,
                )
                p[new] = p[old]

        def bad(what, expected):
            return ValueError(f"{name}: expected {what} to be {expected}, received {p[what]!r}")

        h = p["hidden_layer_sizes"]
        h = (h,) if _is_int(h) else h
        if isinstance(h, (str, bytes)) or not hasattr(h, "__iter__") or not all(_is_int(u) and u >= 1 for u in h):
            raise bad("hidden_layer_sizes", "a tuple of positive integers (units per hidden layer)")
        p["hidden_layer_sizes"] = tuple(int(u) for u in h)
        if p["activation"] not in _ACTIVATIONS:
            raise bad("activation", f"one of {_ACTIVATIONS}")
        if p["solver"] not in _SOLVERS:
            extra = " (vecnn trains by mini-batch gradient descent; 'lbfgs' is not offered)" * (p["solver"] == "lbfgs")
            raise ValueError(f"{name}: expected solver to be one of {_SOLVERS}, received {p['solver']!r}{extra}")
        for what in ("alpha", "tol"):
            if not (_is_real(p[what]) and p[what] >= 0):
                raise bad(what, "a finite number >= 0")
        for what in ("learning_rate_init", "epsilon"):
            if not (_is_real(p[what]) and p[what] > 0):
                raise bad(what, "a finite number > 0")
        for what in ("momentum", "beta_1", "beta_2"):
            if not (_is_real(p[what]) and 0 <= p[what] < 1):
                raise bad(what, "a number in [0, 1)")
        if not (_is_real(p["dropout"]) and 0 <= p["dropout"] < 1):
            raise bad("dropout", "a number in [0, 1)")
        if not (_is_real(p["validation_fraction"]) and 0 < p["validation_fraction"] < 1):
            raise bad("validation_fraction", "a number in (0, 1)")
        for what in ("max_iter", "n_iter_no_change"):
            if not (_is_int(p[what]) and p[what] >= 1):
                raise bad(what, "a positive integer")
        if not (p["batch_size"] == "auto" or (_is_int(p["batch_size"]) and p["batch_size"] >= 1)):
            raise bad("batch_size", "'auto' or a positive integer")
        j = p["n_jobs"]
        if not (j is None or j == "auto" or (_is_int(j) and (j >= 1 or j == -1))):
            raise bad("n_jobs", "None, a positive integer, -1 or 'auto'")
        if p["schedule"] not in ("constant", "cosine"):
            raise bad("schedule", "'constant' or 'cosine'")
        s = p["input_shape"]
        if s is not None and (
            isinstance(s, (str, bytes))
            or not hasattr(s, "__iter__")
            or not s
            or not all(_is_int(d) and d >= 1 for d in s)
        ):
            raise bad("input_shape", "None or a tuple of positive integers such as (1, 28, 28)")
        a = p["architecture"]
        if not (a is None or (isinstance(a, str) and a.strip())):
            raise bad("architecture", "None, 'mlp', 'cnn', 'resnet' or a layer spec string")
        if p["solver"] == "sgd" and p["nesterovs_momentum"] and p["momentum"] == 0:
            p["nesterovs_momentum"] = False  # (scikit-learn too accepts this pair: plain SGD)
        return p

    def _seed(self, random_state) -> int:
        """An integer seed for the weights, the shuffles and the validation split: the given
        one, one drawn from a given RandomState/Generator, or fresh entropy for None (as
        scikit-learn's None: a different model each fit)."""
        rs = random_state
        if rs is None:
            return int(np.random.SeedSequence().generate_state(1)[0])
        if _is_int(rs) and 0 <= rs < 2**32:
            return int(rs)
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(2**31))
        if isinstance(rs, np.random.Generator):
            return int(rs.integers(2**31))
        raise ValueError(
            f"{type(self).__name__}: expected random_state to be None, an integer in [0, 2**32), a "
            f"numpy RandomState or Generator, received {rs!r}"
        )

    # -- building the network --------------------------------------------------------------
    def _sample_shape(self, p, n_features):
        """The shape each row of X is reshaped to: ``input_shape``, or the row as it is."""
        shape = tuple(int(d) for d in p["input_shape"]) if p["input_shape"] is not None else (n_features,)
        if math.prod(shape) != n_features:
            raise ValueError(
                f"{type(self).__name__}: input_shape={shape} holds {math.prod(shape)} values per "
                f"sample, but X has {n_features} features"
            )
        return shape

    def _layers(self, p, shape, n_outputs, X):
        """The network's layers for per-sample ``shape`` and ``n_outputs`` outputs."""
        from . import layers as L
        from . import presets, spec

        n_features = math.prod(shape)
        arch = (p["architecture"] or "mlp").strip()
        first = [L.Standardize(per="feature").adapt(X)] if p["standardize"] else []
        if arch == "mlp":
            act = {"relu": L.ReLU, "tanh": L.Tanh, "logistic": L.Sigmoid, "identity": None}[p["activation"]]
            body = [L.Flatten()] if len(shape) > 1 else []
            width = n_features
            for units in p["hidden_layer_sizes"]:
                body.append(L.Dense(width, units))
                if act is not None:
                    body.append(act())
                if p["dropout"]:
                    body.append(L.Dropout(p["dropout"]))
                width = units
            return [*first, *body, L.Dense(width, n_outputs)]
        if arch in ("cnn", "resnet"):
            if len(shape) != 3:
                raise ValueError(
                    f"{type(self).__name__}: architecture={arch!r} takes images: pass input_shape=(C, H, W) "
                    f"to reshape the rows of X (received input_shape={p['input_shape']!r})"
                )
            return [*first, *presets.PRESETS[arch](shape, n_outputs)]
        body = spec.parse(arch, shape)
        if body and isinstance(body[-1], L.Softmax):
            raise ValueError(
                f"{type(self).__name__}: architecture={arch!r} ends in softmax: leave it out, the network's "
                f"outputs are logits (the classifier's loss and predict_proba apply the softmax)"
            )
        out = shape
        for layer in body:
            out = tuple(layer.output_shape(out))
        last = body[-1] if body else None
        if isinstance(last, L.Dense) and last.out_features == n_outputs:
            return [*first, *body]  # the spec ends in the output layer
        if len(out) > 1:
            body.append(L.Flatten())
        return [*first, *body, L.Dense(math.prod(out), n_outputs)]

    def _optimizer(self, p, steps_per_epoch):
        from . import optim

        schedule = optim.CosineLR(p["max_iter"] * steps_per_epoch) if p["schedule"] == "cosine" else None
        lr, solver = p["learning_rate_init"], p["solver"]
        if solver == "sgd":
            return optim.SGD(lr, momentum=p["momentum"], nesterov=p["nesterovs_momentum"], schedule=schedule)
        if solver == "rmsprop":
            return optim.RMSProp(lr, eps=p["epsilon"], schedule=schedule)
        betas = (p["beta_1"], p["beta_2"])
        if solver == "adamw":  # alpha is AdamW's decoupled weight decay, not a loss term
            return optim.AdamW(lr, betas=betas, eps=p["epsilon"], weight_decay=p["alpha"], schedule=schedule)
        return optim.Adam(lr, betas=betas, eps=p["epsilon"], schedule=schedule)

    @staticmethod
    def _blas_threads(n_jobs):
        """``(governor, BLAS setting)`` for ``n_jobs``: a fixed thread count (None: 1, -1: all
        cores), or for "auto" the governor ``Sequential.fit`` uses, which picks the count by
        timing the steps (vecnn.threads). A fixed count makes a seeded fit reproducible bit for
        bit: BLAS rounds a product according to how its rows are split between threads, so fits
        whose thread counts differ agree only to rounding, which 200 epochs can grow."""
        if n_jobs == "auto":
            return _threads.governor()
        n = (os.cpu_count() or 1) if n_jobs == -1 else (n_jobs or 1)
        return None, _threads.BlasLimit(n)

    def _has_batch_norm(self):
        from .layers import BatchNorm1D, BatchNorm2D

        todo = list(self.model_.layers)
        while todo:
            layer = todo.pop()
            if isinstance(layer, (BatchNorm1D, BatchNorm2D)):
                return True
            todo.extend(layer.sublayers())
        return False

    def _weight_slices(self):
        """Where the weight matrices and kernels (not biases, not normalization scales) lie in
        the flat parameter buffer: the part scikit-learn's ``alpha`` penalizes."""
        return [slice(start, start + math.prod(shape)) for _, k, start, shape in self.model_._slots if k == "W"]

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data (images as flat rows, reshaped by ``input_shape``). Sparse
            matrices are refused: pass ``X.toarray()``.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels (classification) or target values (regression).
        sample_weight : array-like of shape (n_samples,), default=None
            Per-sample weights: each batch's loss is ``sum_i w_i l_i / sum_i w_i``.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def _partial_fit(self, X, y, sample_weight=None, classes=None):
        p = self._settings()
        if p["early_stopping"]:
            raise ValueError(f"{type(self).__name__}: partial_fit does not support early_stopping=True")
        return self._fit(X, y, sample_weight, incremental=True, classes=classes, settings=p)

    def _fit(self, X, y, sample_weight, incremental, classes=None, settings=None):
        from sklearn.utils.validation import _check_sample_weight, validate_data

        from .model import Sequential

        p = settings if settings is not None else self._settings()
        name = type(self).__name__
        fitted = hasattr(self, "model_")
        reset = not fitted or not (incremental or p["warm_start"])
        if y is None:
            raise ValueError(f"{name} requires y to be passed, but the target y is None.")
        X, y = validate_data(
            self,
            X,
            y,
            reset=reset,
            dtype=DTYPE,
            multi_output=not self._is_classifier,
            y_numeric=not self._is_classifier,
        )
        Y = self._encode_targets(y, reset, incremental, classes, p)
        sw = (
            None
            if sample_weight is None
            else _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        )
        sw = self._class_weights(y, sw, incremental)
        if sw is not None:
            keep = sw > 0  # a zero weight is no sample: training equals training without it
            if not keep.any():
                raise ValueError(f"{name}: every sample weight is zero: nothing to learn from")
            if not keep.all():
                X, Y, sw = X[keep], Y[keep], sw[keep]
            if np.all(sw == sw[0]):
                sw = None  # equal weights: the plain mean, bit for bit
        X = X.reshape(len(X), *self._sample_shape(p, X.shape[1]))
        if reset:
            seed = self._seed(p["random_state"])
            # the shuffles and the validation split draw from their own streams of the seed
            self._shuffle_rng = np.random.default_rng([seed, 1])
            self._split_seed = seed % 2**31
            self.n_iter_ = 0
            self.t_ = 0
            self.loss_curve_ = []
            self._no_improvement_count = 0
            self.best_loss_ = None if p["early_stopping"] else np.inf
            self.validation_scores_ = [] if p["early_stopping"] else None
            self.best_validation_score_ = -np.inf if p["early_stopping"] else None
        elif not incremental:  # warm start: a fresh convergence count, the same weights and optimizer
            self._no_improvement_count = 0
            if p["early_stopping"]:
                self.validation_scores_ = self.validation_scores_ or []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf if self.best_loss_ is None else self.best_loss_
        X_val = None
        if p["early_stopping"] and not incremental:
            X, X_val, Y, Y_val, sw, sw_val = self._split(X, Y, sw, p)
        if reset:  # (built from the training rows only: a Standardize layer learns their statistics)
            n_outputs = Y.shape[1] if Y.ndim == 2 else len(self.classes_)
            self.model_ = Sequential(self._layers(p, X.shape[1:], n_outputs, X), seed=seed)
            self.model_.metadata["input_shape"] = list(X.shape[1:])
            # described as a vecnn model, for model_.save (the training loss is computed here, as scikit-learn's)
            self.model_.loss = _losses.get("cross_entropy" if self._is_classifier else "mse")
            if self._is_classifier:
                self.model_.class_names = [str(c) for c in self.classes_]
        n = len(X)
        if p["batch_size"] == "auto":
            batch_size = min(200, n)
        else:
            if p["batch_size"] > n:
                warnings.warn(
                    f"{name}: batch_size={p['batch_size']} is larger than the {n} training samples; it is "
                    f"clipped to {n}",
                    UserWarning,
                    stacklevel=3,
                )
            batch_size = min(p["batch_size"], n)
        self._batch_norm = self._has_batch_norm()
        if self._batch_norm and min(batch_size, len(X)) < 2:
            raise ValueError(
                f"{name}: the network's BatchNorm learns its statistics from at least 2 samples per batch; "
                f"received batch_size={p['batch_size']} and {len(X)} training sample(s)"
            )
        steps = -(-n // batch_size)
        model = self.model_
        opt = self._optimizer(p, steps)
        before = model.optimizer
        if not reset and type(before) is type(opt) and before.slots == opt.slots:
            # continuing (warm_start, partial_fit): today's hyperparameters, the moments and step count
            # of before (scikit-learn starts a new optimizer at a warm-started fit; vecnn keeps its state)
            opt.load_state_dict(before.state_dict())
        model.optimizer = opt
        if X_val is None:
            Y_val = sw_val = None

        governor, blas = self._blas_threads(p["n_jobs"])
        try:
            best = self._epochs(X, Y, sw, X_val, Y_val, sw_val, batch_size, incremental, p, governor)
        finally:
            if blas is not None:
                blas.restore()
        if best is not None:
            self.model_.set_weights(best)  # the weights of the best validation score, as scikit-learn
        self._freeze()
        return self

    def _epochs(self, X, Y, sw, X_val, Y_val, sw_val, batch_size, incremental, p, governor):
        """The epochs of one ``fit`` (one for ``partial_fit``), with scikit-learn's stopping rules;
        returns the best weights when early stopping chose them, else None."""
        name, n = type(self).__name__, len(X)
        weights = self._weight_slices()
        stopped, best = False, None
        for _ in range(1 if incremental else p["max_iter"]):
            loss = self._train_epoch(X, Y, sw, batch_size, p, weights, governor)
            if governor is not None:
                governor.pause()  # scoring is not a training step
            self.n_iter_ += 1
            self.t_ += n
            self.loss_curve_.append(loss)
            self.loss_ = loss
            if p["verbose"]:
                print(f"Iteration {self.n_iter_}, loss = {loss:.8f}")
            if X_val is not None:
                score = self._score_values(Y_val, self._outputs(self.model_, X_val), sw_val)
                self.validation_scores_.append(score)
                if p["verbose"]:
                    print(f"Validation score: {score:f}")
                improved = score >= self.best_validation_score_ + p["tol"]
                if score > self.best_validation_score_:
                    self.best_validation_score_ = score
                    best = self.model_.get_weights()
            else:
                improved = not loss > self.best_loss_ - p["tol"]
                self.best_loss_ = min(self.best_loss_, loss)
            self._no_improvement_count = 0 if improved else self._no_improvement_count + 1
            if self._no_improvement_count > p["n_iter_no_change"]:
                if p["verbose"]:
                    what = "Validation score" if X_val is not None else "Training loss"
                    print(
                        f"{what} did not improve more than tol={p['tol']:f} for "
                        f"{p['n_iter_no_change']} consecutive epochs. Stopping."
                    )
                stopped = True
                break
        if not incremental and not stopped:
            from sklearn.exceptions import ConvergenceWarning

            warnings.warn(
                f"{name}: maximum iterations ({p['max_iter']}) reached and the optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return best

    def _split(self, X, Y, sw, p):
        from sklearn.model_selection import train_test_split

        stratify = Y if self._is_classifier else None
        arrays = [X, Y] if sw is None else [X, Y, sw]
        parts = train_test_split(
            *arrays, random_state=self._split_seed, test_size=p["validation_fraction"], stratify=stratify
        )
        if len(parts[1]) < 2:
            raise ValueError(
                f"{type(self).__name__}: the validation set is too small ({len(parts[1])} sample). "
                f"Increase 'validation_fraction' or the size of your dataset."
            )
        X, X_val, Y, Y_val = parts[:4]
        sw, sw_val = (parts[4], parts[5]) if sw is not None else (None, None)
        return X, X_val, Y, Y_val, sw, sw_val

    def _train_epoch(self, X, Y, sw, batch_size, p, weights, governor=None):
        """One pass over (X, Y) in mini-batches; returns the epoch's loss (batch losses weighted
        by batch size, as scikit-learn's ``loss_curve_``)."""
        model, opt = self.model_, self.model_.optimizer
        params, grads = model.flat_params, model.flat_grads
        alpha = p["alpha"] if p["solver"] != "adamw" else 0.0
        n = len(X)
        order = self._shuffle_rng.permutation(n) if p["shuffle"] else None
        starts = list(range(0, n, batch_size))
        if len(starts) > 1 and n - starts[-1] < 2 and self._batch_norm:
            starts.pop()  # one sample gives BatchNorm no statistics: it joins the batch before (as Sequential.fit)
        ends = starts[1:] + [n]
        total = 0.0
        for start, end in zip(starts, ends):
            idx = order[start:end] if order is not None else slice(start, end)
            xb, yb = X[idx], Y[idx]
            wb = sw[idx] if sw is not None else None
            m = len(xb)
            with np.errstate(over="ignore", invalid="ignore"):
                out = model.forward(xb, training=True)  # (m, outputs)
                value, dout, w_sum = self._loss(out, yb, wb)
                model.backward(dout)
                if alpha:
                    # scikit-learn's penalty: alpha/2 * ||W||^2 / sum(w), gradient alpha * W / sum(w)
                    c = alpha / w_sum
                    for s in weights:
                        value += 0.5 * c * float(np.dot(params[s], params[s]))
                        grads[s] += DTYPE(c) * params[s]
                ok = math.isfinite(value) and opt.step(params, grads)
            if not ok:
                if math.isfinite(value):
                    opt.undo(params)
                raise FloatingPointError(
                    f"{type(self).__name__}: training diverged at iteration {self.n_iter_ + 1}: the loss or the "
                    f"weights became non-finite (the weights from before that step were restored). Try a "
                    f"smaller learning_rate_init or scaling X (e.g. StandardScaler)"
                )
            total += value * m
            if governor is not None:
                governor.tick(m)
        return total / n

    # -- prediction ------------------------------------------------------------------------
    def _outputs(self, model, X):
        """``model``'s outputs for rows ``X`` (n, *input_shape), 1024 rows at a time."""
        n = len(X)
        out = None
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, n, 1024):
                y = model.forward(X[start : start + 1024], training=False)
                if out is None:
                    out = np.empty((n, *y.shape[1:]), y.dtype)
                out[start : start + len(y)] = y
        assert out is not None
        if not np.isfinite(out).all():
            bad = int(np.flatnonzero(~np.isfinite(out).reshape(n, -1).all(axis=1))[0])
            raise ValueError(
                f"{type(self).__name__}: the model's outputs overflowed to NaN or Inf, the first for X[{bad}]: "
                f"inputs (or weights) too large"
            )
        return out

    def _forward(self, X):
        """The outputs the predictions come from: the trained float32 weights applied in
        float64 (``_model64``). In float32, a row's outputs depend on the rows passed with it:
        BLAS rounds a product differently with the row's place in the matrix (OpenBLAS's
        Haswell sgemm takes rows in 6-row groups that alternate between two summation orders,
        and the last rows of each 64-row panel a third; one row alone takes the matrix-vector
        path), which moves float32 logits by an ulp (~1e-7 relative) when X is reordered or
        split. In float64 the same dependence is ~1e-16: predictions do not depend on the
        order or company of the rows for any comparison (scikit-learn's checks use rtol=1e-7)."""
        _, blas = self._blas_threads(self.n_jobs if self.n_jobs != "auto" else -1)
        try:
            return self._outputs(self._model64, X.astype(np.float64))
        finally:
            blas.restore()

    def _freeze(self):
        """The float64 copy of the trained network that predicts (see ``_forward``): made after
        every fit, so that predicting changes nothing in the estimator."""
        model = self.model_
        model64 = copy.deepcopy(model, memo={id(model.optimizer): None})  # the weights without the optimizer
        for layer in model64.layers:
            layer.astype(np.float64)
        model64._build_flat()  # (as vecnn.gradcheck.float64_model: float64 buffers, the parameters views)
        self._model64 = model64

    def _checked_X(self, X):
        from sklearn.utils.validation import check_is_fitted, validate_data

        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=DTYPE)
        return X.reshape(len(X), *self.model_.metadata["input_shape"])

    def __getstate__(self):
        model = self.__dict__.get("model_")
        if model is not None:
            # what the last forward kept for a backward (each layer's activations of a whole
            # batch) and scratch buffers are no part of the model: shrink them to one row, and
            # the pickle to about the weights and optimizer state
            model.forward(np.zeros((1, *model.metadata["input_shape"]), DTYPE), training=False)
            todo = list(model.layers)
            while todo:
                layer = todo.pop()
                layer.drop_scratch()
                todo.extend(layer.sublayers())
            if model.optimizer is not None:  # its undo buffers: allocated again at the next step
                model.optimizer._previous = model.optimizer._scratch = None
        state = dict(super().__getstate__())
        state.pop("_model64", None)  # made again on loading
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        model = self.__dict__.get("model_")
        if model is not None:
            # pickle writes each layer's parameters (views into the model's flat buffer) as arrays
            # of their own: make them views into one flat buffer again, or training after loading
            # would update a buffer no layer reads (the optimizer state keeps its layout)
            model._build_flat()
            self._freeze()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False  # refused with scikit-learn's own message: pass X.toarray()
        return tags


def _softmax64(logits):
    """Row-wise softmax computed in float64 (the logits are float32)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


_PARAMS_DOC = """
    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        The ith element is the number of neurons in the ith hidden layer (``architecture=None``
        or ``"mlp"``).
    activation : {'relu', 'tanh', 'logistic', 'identity'}, default='relu'
        Activation of the hidden layers of the MLP.
    solver : {'adam', 'sgd', 'adamw', 'rmsprop'}, default='adam'
        The weight optimizer: Adam, SGD with (Nesterov) momentum, AdamW or RMSProp (vecnn's
        ``optim``, which follow ``torch.optim``). 'lbfgs' is not offered.
    alpha : float, default=0.0001
        Strength of the L2 penalty, as scikit-learn: each batch's loss gets
        ``alpha / 2 * ||W||^2 / sum(sample weights of the batch)`` (the batch size without
        weights) over the weight matrices and kernels, biases excluded. With
        ``solver='adamw'`` it is AdamW's decoupled weight decay instead.
    batch_size : int or 'auto', default='auto'
        Size of the mini-batches; 'auto' is ``min(200, n_samples)``.
    learning_rate_init : float, default=0.001
        The (initial) learning rate.
    max_iter : int, default=200
        Maximum number of epochs (passes over the data); fewer when training converges.
    shuffle : bool, default=True
        Whether to shuffle the samples in each epoch.
    random_state : int, RandomState or Generator instance, default=None
        Seeds the weights, the shuffles, dropout and the early-stopping split. None: fresh
        entropy each fit (as scikit-learn); an int gives the same model every time.
    tol : float, default=1e-4
        Training stops when the loss (or validation score, with ``early_stopping``) has not
        improved by at least ``tol`` for ``n_iter_no_change`` consecutive epochs.
    verbose : bool, default=False
        Print the loss (and validation score) after each epoch.
    warm_start : bool, default=False
        When True, ``fit`` continues from the previous fit's weights *and optimizer state*
        (Adam's moments and step count; scikit-learn starts a new optimizer), so ``fit`` with
        ``max_iter=k`` twice equals one fit of ``2 k`` epochs.
    momentum : float, default=0.9
        Momentum of ``solver='sgd'``.
    nesterovs_momentum : bool, default=True
        Nesterov momentum for ``solver='sgd'``.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified for classifiers),
        score it after each epoch (accuracy, or R^2 for regression), stop when the score has
        not improved by ``tol`` for ``n_iter_no_change`` epochs, and keep the best weights.
    validation_fraction : float, default=0.1
        The held-out share of the training data for ``early_stopping``.
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's (and AdamW's) moment decay rates and epsilon (``epsilon`` is also RMSProp's).
    n_iter_no_change : int, default=10
        Epochs without improvement by ``tol`` before training stops.
    dropout : float, default=0.0
        Dropout rate after each hidden layer of the MLP (not in scikit-learn's MLPs).
    n_jobs : int, -1, 'auto' or None, default=None
        BLAS threads for training and prediction: None is 1, -1 all cores, 'auto' lets vecnn
        choose by timing the training steps (all cores alone, fewer beside a busy process,
        as ``Sequential.fit``). A fixed count gives the same model bit for bit for a seeded
        fit; with 'auto', fits agree only to rounding (BLAS rounds a product according to how
        its rows are split between threads).
    schedule : {'constant', 'cosine'}, default='constant'
        Learning-rate schedule: constant, or cosine decay to 0 over ``max_iter`` epochs.
    standardize : bool, default=False
        Put a per-feature standardization with the training data's statistics in front of
        the network (kept in the model; a ``StandardScaler`` in a pipeline does the same).
    architecture : None, 'mlp', 'cnn', 'resnet' or str, default=None
        The network: None or 'mlp' builds the MLP from ``hidden_layer_sizes``; 'cnn' and
        'resnet' are vecnn's presets (``vecnn.presets``) for images; any other string is a
        vecnn layer spec (``vecnn.spec``), e.g. ``"conv:8:3,relu,maxpool:2,flatten,dense:32,relu"``,
        to which a Dense layer to the outputs is appended unless the spec already ends in a
        dense layer of that many units. Image architectures need ``input_shape``.
    input_shape : tuple of int, default=None
        Per-sample shape, e.g. ``(1, 28, 28)``: each row of X (of ``prod(input_shape)``
        features) is reshaped to it before the network. None: the rows as they are.
    hidden, epochs, lr, seed : deprecated
        The names of the previous release for ``hidden_layer_sizes``, ``max_iter``,
        ``learning_rate_init`` and ``random_state``; they still work, with a FutureWarning,
        and will be removed in the next release.
"""

_ATTRS_DOC = """
    loss_ : float
        The loss of the last epoch.
    best_loss_ : float or None
        The lowest epoch loss (None with ``early_stopping``).
    loss_curve_ : list of float
        The loss of each epoch.
    validation_scores_ : list of float or None
        The validation score after each epoch with ``early_stopping``, else None.
    best_validation_score_ : float or None
        The best of ``validation_scores_`` (None without ``early_stopping``).
    t_ : int
        Training samples seen.
    n_iter_ : int
        Epochs trained (summed over warm-started fits and ``partial_fit`` calls).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when X was a DataFrame with string column names.
    model_ : vecnn.Sequential
        The trained network (``model_.save(path)`` writes it as a vecnn model file).
"""


class VecnnClassifier(ClassifierMixin, _BaseVecnn):
    _is_classifier = True

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate_init=0.001,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        dropout=0.0,
        class_weight=None,
        n_jobs=None,
        schedule="constant",
        standardize=False,
        architecture=None,
        input_shape=None,
        hidden=None,
        epochs=None,
        lr=None,
        seed=None,
    ):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate_init=learning_rate_init, max_iter=max_iter, shuffle=shuffle, random_state=random_state,
            tol=tol, verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
            n_iter_no_change=n_iter_no_change, dropout=dropout, n_jobs=n_jobs, schedule=schedule,
            standardize=standardize, architecture=architecture, input_shape=input_shape, hidden=hidden,
            epochs=epochs, lr=lr, seed=seed,
        )  # fmt: skip
        self.class_weight = class_weight

    def _encode_targets(self, y, reset, incremental, classes, p):
        """Labels -> class indices into ``classes_`` (set on the first fit)."""
        from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels

        name = type(self).__name__
        check_classification_targets(y)
        if type_of_target(y) not in ("binary", "multiclass"):
            raise ValueError(f"{name}: expected 1-D class labels, received targets of type {type_of_target(y)!r}")
        if incremental and reset:
            if classes is None:
                raise ValueError(f"{name}: classes must be passed on the first call to partial_fit.")
            self.classes_ = unique_labels(classes)
        elif incremental and classes is not None and not np.array_equal(unique_labels(classes), self.classes_):
            raise ValueError(
                f"{name}: `classes={classes!r}` is not the same as on the first call to partial_fit "
                f"({self.classes_.tolist()})"
            )
        elif reset:
            self.classes_ = unique_labels(y)
        unknown = np.setdiff1d(unique_labels(y), self.classes_)
        if len(unknown):
            what = "partial_fit" if incremental else "warm_start"
            raise ValueError(
                f"{name}: {what} can only be used where `y` has the classes of the first call: "
                f"expected labels in {self.classes_.tolist()}, received {unknown.tolist()}"
            )
        if len(self.classes_) < 2:
            raise ValueError(
                f"{name}: needs samples of at least 2 classes in the data, but the data contains only one "
                f"class: {self.classes_[0]!r}"
            )
        return np.searchsorted(self.classes_, y).astype(np.int64)

    def _class_weights(self, y, sw, incremental):
        """Sample weights times the weight of each sample's class (``class_weight``)."""
        cw = self.class_weight
        if cw is None:
            return sw
        from sklearn.utils.class_weight import compute_class_weight

        if isinstance(cw, str) and cw == "balanced" and incremental:
            raise ValueError(
                f"{type(self).__name__}: class_weight='balanced' is not supported for partial_fit (the class "
                f"frequencies of one chunk are not those of the data): pass a dict of weights per class, "
                f"e.g. from sklearn.utils.class_weight.compute_class_weight on all of y"
            )
        if not (isinstance(cw, dict) or (isinstance(cw, str) and cw == "balanced")):
            raise ValueError(
                f"{type(self).__name__}: expected class_weight to be None, 'balanced' or a dict "
                f"{{class label: weight}}, received {cw!r}"
            )
        per_class = compute_class_weight(cw, classes=self.classes_, y=y)
        w = per_class[np.searchsorted(self.classes_, y)]
        return w if sw is None else sw * w

    def _loss(self, logits, y, w):
        """Softmax cross-entropy of the batch: ``(sum_i w_i l_i / sum_i w_i, dL/dlogits, sum_i w_i)``."""
        m = len(y)
        z = logits - logits.max(axis=1, keepdims=True)  # (m, K)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        rows = np.arange(m)
        per_sample = np.log(s[:, 0]) - z[rows, y]  # -log p(y_i)
        grad = e / s  # softmax
        grad[rows, y] -= 1
        if w is None:
            grad *= DTYPE(1 / m)
            return float(per_sample.mean(dtype=np.float64)), grad, float(m)
        w_sum = float(w.sum())
        grad *= (w / w_sum).astype(DTYPE)[:, None]
        return float(np.dot(per_sample.astype(np.float64), w) / w_sum), grad, w_sum

    def _score_values(self, y_idx, logits, w):
        from sklearn.metrics import accuracy_score

        return float(accuracy_score(y_idx, logits.argmax(axis=1), sample_weight=w))

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Update the model with one epoch over the given data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,)
            The class labels.
        classes : array of shape (n_classes,), default=None
            All the classes of the problem; required on the first call (as scikit-learn's
            ``partial_fit``), and may be left out on later calls.
        sample_weight : array-like of shape (n_samples,), default=None
            Per-sample weights.

        Returns
        -------
        self : object
            The estimator, trained one more epoch.
        """
        return self._partial_fit(X, y, sample_weight, classes)

    def predict_proba(self, X):
        """Probability estimates: the softmax of the network's outputs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probability of each class (columns in the order of ``classes_``) for each sample.

        Notes
        -----
        The trained float32 weights are applied in float64 here, so that a sample's
        probabilities do not depend on the other rows of X (their number or order): float32
        matrix products are rounded by BLAS according to a row's place in the matrix, which
        moves float32 outputs by ~1e-7 relative; float64 leaves ~1e-16.
        """
        return _softmax64(self._forward(self._checked_X(X)))

    def predict_log_proba(self, X):
        """The log of ``predict_proba``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        logits = self._forward(self._checked_X(X)).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def predict(self, X):
        """Predict the class of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,)
            The predicted classes (labels from ``classes_``).
        """
        index = self._forward(self._checked_X(X)).argmax(axis=1)
        return self.classes_[index]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags


VecnnClassifier.__doc__ = (
    """A neural-network classifier trained by vecnn, with ``MLPClassifier``'s parameters.

    Multi-layer perceptrons (or convolutional networks on image rows, see ``architecture``)
    trained on mini-batches with softmax cross-entropy, in float32. The parameters shared with
    ``sklearn.neural_network.MLPClassifier`` mean what they mean there.
"""
    + _PARAMS_DOC
    + """    class_weight : dict, 'balanced' or None, default=None
        Weights of the classes ``{label: weight}``; 'balanced' weighs each class by
        ``n_samples / (n_classes * count)``. Multiplies ``sample_weight``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels."""
    + _ATTRS_DOC
    + """
    See Also
    --------
    sklearn.neural_network.MLPClassifier : scikit-learn's multi-layer perceptron.
    VecnnRegressor : the regressor.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from vecnn.sklearn import VecnnClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = VecnnClassifier(hidden_layer_sizes=(64,), max_iter=20, random_state=0).fit(X / 16, y)
    >>> clf.predict_proba(X[:2] / 16).shape
    (2, 10)
    >>> cnn = VecnnClassifier(architecture="conv:8:3,relu,maxpool:2", input_shape=(1, 8, 8), max_iter=5)
    """
)


class VecnnRegressor(RegressorMixin, _BaseVecnn):
    def _encode_targets(self, y, reset, incremental, classes, p):
        from sklearn.utils.validation import column_or_1d

        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if reset:
            self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        elif (1 if y.ndim == 1 else y.shape[1]) != self.n_outputs_:
            raise ValueError(
                f"{type(self).__name__}: y has {1 if y.ndim == 1 else y.shape[1]} outputs, but the model was "
                f"fitted with {self.n_outputs_}"
            )
        return np.ascontiguousarray(y.reshape(len(y), -1), dtype=DTYPE)

    def _class_weights(self, y, sw, incremental):
        return sw

    def _loss(self, pred, y, w):
        """Squared error as scikit-learn's ``squared_loss``: value ``mean((pred - y)**2) / 2`` (weighted
        over samples), gradient ``(pred - y)`` per sample over the batch (weights) sum."""
        diff = pred - y  # (m, outputs)
        m = len(y)
        per_sample = (diff.astype(np.float64) ** 2).mean(axis=1) / 2
        if w is None:
            return float(per_sample.mean()), diff * DTYPE(1 / m), float(m)
        w_sum = float(w.sum())
        return float(np.dot(per_sample, w) / w_sum), diff * (w / w_sum).astype(DTYPE)[:, None], w_sum

    def _score_values(self, y, pred, w):
        from sklearn.metrics import r2_score

        return float(r2_score(y, pred, sample_weight=w))

    def partial_fit(self, X, y, sample_weight=None):
        """Update the model with one epoch over the given data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Per-sample weights.

        Returns
        -------
        self : object
            The estimator, trained one more epoch.
        """
        return self._partial_fit(X, y, sample_weight)

    def predict(self, X):
        """Predict using the network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The predicted values, 1-D when the model was fitted on one output (computed in float64
            from the float32 weights, as every prediction: see ``predict_proba``'s note).
        """
        out = self._forward(self._checked_X(X))
        return out[:, 0] if self.n_outputs_ == 1 else out


VecnnRegressor.__doc__ = (
    """A neural-network regressor trained by vecnn, with ``MLPRegressor``'s parameters.

    Multi-layer perceptrons (or convolutional networks on image rows, see ``architecture``)
    with a linear output layer, trained on mini-batches with the squared error, in float32.
    The parameters shared with ``sklearn.neural_network.MLPRegressor`` mean what they mean there.
"""
    + _PARAMS_DOC
    + """
    Attributes
    ----------
    n_outputs_ : int
        Number of outputs."""
    + _ATTRS_DOC
    + """
    See Also
    --------
    sklearn.neural_network.MLPRegressor : scikit-learn's multi-layer perceptron.
    VecnnClassifier : the classifier.

    Examples
    --------
    >>> import numpy as np
    >>> from vecnn.sklearn import VecnnRegressor
    >>> X = np.random.default_rng(0).normal(size=(200, 3))
    >>> reg = VecnnRegressor(hidden_layer_sizes=(32,), max_iter=50, random_state=0).fit(X, X.sum(axis=1))
    >>> reg.predict(X[:3]).shape
    (3,)
    """
)
