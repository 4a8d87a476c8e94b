"""Sequential: layers in a row, trained on whole mini-batches.

All parameters live in one contiguous float32 buffer and all gradients in another; each
layer's ``params[k]`` / ``grads[k]`` is a view into them. An optimizer step is therefore a
few whole-buffer operations, a gradient clip one dot product, and a distributed gradient sum
one Allreduce.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import losses as _losses
from . import ops
from . import optim as _optim
from . import parallel as _parallel
from . import threads as _threads
from .backend import DTYPE
from .callbacks import Callback, EpochLogger, History, ProgressBar
from .errors import check_finite, fmt_shape
from .layers.base import Layer, check_seed
from .layers.norm import BatchNorm1D, _BatchNorm
from .registry import register_model

_ALIGN = 16  # floats: every parameter view starts at a multiple of 16 floats (64 bytes) into the buffer


def _check_outputs(where, out, offset=0):
    """A model whose weights are finite can still overflow float32 on large inputs (or large
    weights): refuse to hand back NaN or Inf as if they were predictions."""
    backend = ops.get(out)
    if out.dtype.kind == "f" and not backend.all_finite(out):
        xp = backend.xp
        bad = xp.flatnonzero(~xp.isfinite(out).reshape(len(out), -1).all(axis=1))
        raise ValueError(
            f"{where}: the model's outputs overflowed to NaN or Inf for {len(bad)} sample(s), "
            f"the first X[{offset + int(bad[0])}]: inputs (or weights) too large for float32"
        )


def _host():
    """NumPy, for what stays on the host: memory-mapped input, sample weights and class counts
    (looked up when used: the CPU backend loads numba on first use, never at import)."""
    return ops.cpu().xp


#: bytes of float32 rows a memory-mapped input is checked (and cast) at a time
CHUNK_BYTES = 1 << 22


def _lazy(X) -> bool:
    """Whether ``X`` is memory-mapped (``np.memmap``, ``np.load(mmap_mode=...)``): then it is
    never read whole into memory; its rows are cast to float32 batch by batch."""
    return isinstance(X, _host().memmap)


def _rows(X, start, end, dtype):
    """``X[start:end]`` as a C-contiguous array of ``dtype`` (a memory-mapped ``X``: read and
    cast here; an array ``fit`` already cast: the view itself)."""
    part = X[start:end]
    return _host().ascontiguousarray(part, dtype=dtype) if _lazy(X) else part


def _check_finite_chunks(where, X, dtype):
    """``check_finite`` of ``X`` cast to ``dtype`` (float64 values beyond float32's range become
    Inf, as the up-front cast of an in-memory array makes them), a bounded chunk of rows at a
    time; integer data needs no reading."""
    if X.dtype.kind in "iub":
        return
    step = max(1, CHUNK_BYTES // max(1, math.prod(X.shape[1:]) * np.dtype(dtype).itemsize))
    count, first = 0, None
    for start in range(0, len(X), step):
        with np.errstate(over="ignore"):  # too large for float32: reported below as Inf
            chunk = _rows(X, start, start + step, dtype)
        if ops.cpu().all_finite(chunk):
            continue
        bad = _host().argwhere(~_host().isfinite(chunk))
        count += len(bad)
        if first is None:
            first = (start + int(bad[0][0]), *(int(i) for i in bad[0][1:]))
    if first is not None:
        raise ValueError(f"{where}: contains {count} non-finite value(s) (NaN or Inf), the first at index {first}")


def _yields_batches(X, y) -> bool:
    """Whether ``fit``'s ``X`` is an iterable of ``(X_batch, y_batch)`` batches: an iterator or
    generator, or, with ``y=None``, any iterable that is not an array (a list of such tuples)."""
    if hasattr(X, "shape") and hasattr(X, "dtype") or isinstance(X, (str, bytes, dict)):
        return False
    return hasattr(X, "__next__") or (y is None and hasattr(X, "__iter__"))


def _as_array(a):
    """A batch's array as NumPy or CuPy data: a tensor of another library (a PyTorch
    DataLoader's CPU tensors) or a list through ``numpy.asarray``."""
    try:
        ops.get(a)
        return a
    except ValueError:
        pass
    try:
        return _host().asarray(a)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"expected NumPy arrays, received a {type(a).__name__} NumPy cannot read ({e})") from None


class _Stream:
    """``fit``'s iterable of ``(X_batch, y_batch[, sample_weight_batch])`` batches: each batch
    checked and cast as it comes (``epoch`` yields them as ``_train_epoch`` takes them)."""

    def __init__(self, model, source, steps, class_weight):
        self.model, self.source, self.steps, self.class_weight = model, source, steps, class_weight
        self.one_shot = hasattr(source, "__next__")
        self._it = source if self.one_shot else None
        self._peeked: Any = None
        self.read = 0  # batches read so far
        self.exhausted = False  # a one-shot iterator ran out
        self.shape: tuple | None = None  # per-sample shape of the first batch
        self._bn = next((l for l in _walk(model.layers) if isinstance(l, BatchNorm1D)), None)

    def ready(self) -> bool:
        """Whether another epoch can start: a one-shot iterator must have a batch left (read
        ahead and kept for the epoch)."""
        if self.one_shot and self._peeked is None and not self.exhausted:
            try:
                self._peeked = (next(self._it),)
            except StopIteration:
                self.exhausted = True
        return not (self.one_shot and self._peeked is None)

    def warn(self, epoch, initial_epoch, epochs):
        warnings.warn(
            f"fit: X ran out of batches after {self.read} of the {self.steps * (epochs - initial_epoch)} "
            f"that steps_per_epoch={self.steps} and {epochs - initial_epoch} epoch(s) take: training stopped "
            f"after epoch {epoch} (History has the epochs trained)",
            UserWarning,
            stacklevel=5,  # the caller of fit
        )

    def epoch(self):
        k, fresh = 0, False
        if not self.one_shot and self.steps is None:
            self._it, fresh = iter(self.source), True  # one pass per epoch
        while self.steps is None or k < self.steps:
            if self._peeked is not None:
                (item,), self._peeked = self._peeked, None
            else:
                if self._it is None:
                    self._it, fresh = iter(self.source), True
                try:
                    item = next(self._it)
                except StopIteration:
                    if self.one_shot:
                        self.exhausted = True
                        return
                    self._it = None
                    if fresh:  # a whole pass without a batch
                        raise ValueError(
                            f"fit: X: the iterable of batches yielded no batch (after {self.read} batches)"
                        )
                    if self.steps is None:
                        return  # the pass is the epoch
                    continue
                fresh = False
            self.read += 1
            yield self.check(item, self.read)
            k += 1

    def check(self, item, b):
        """Batch ``b`` (counted from 1 over the whole fit) checked and cast, as
        ``(xs, ys, ws, m, weight, total)``; a ``ValueError`` names the batch."""
        model = self.model
        try:
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                what = f"a {type(item).__name__}" + (f" of {len(item)}" if isinstance(item, (tuple, list)) else "")
                raise ValueError(
                    f"expected a pair (X_batch, y_batch) or a triple (X_batch, y_batch, sample_weight), "
                    f"received {what} (an X with y=None is read as an iterable of batches)"
                )
            xs, ys = model._check_Xy(_as_array(item[0]), _as_array(item[1]), "X_batch", "y_batch", training=True)
            if _lazy(xs):
                xs = _rows(xs, 0, len(xs), model.flat_params.dtype)
            if self.shape is None:
                self.shape = tuple(xs.shape[1:])
                model.metadata["input_shape"] = list(self.shape)
            elif tuple(xs.shape[1:]) != self.shape:
                raise ValueError(
                    f"X_batch: expected samples of shape {fmt_shape((None, *self.shape))} as in the batches "
                    f"before, received {fmt_shape(xs.shape)}"
                )
            if self._bn is not None and len(xs) < 2:
                raise ValueError(f"{self._bn!r} learns its statistics from at least 2 samples per batch, received 1")
            wb = _as_array(item[2]) if len(item) == 3 else None
            w = model._check_weights(wb, self.class_weight, ys, xs.shape[1:])
        except ValueError as e:
            text = str(e)
            raise ValueError(f"fit: batch {b} of X: {text[5:] if text.startswith('fit: ') else text}") from None
        m = len(xs)
        if w is None:
            return xs, ys, None, m, m, m
        total = float(w.sum(dtype=np.float64))
        if w[0] > 0 and w.min() == w.max():
            w = None
        return xs, ys, w, m, total, total


def _walk(layers):
    """The layers and, depth first, the layers inside them (``Residual`` blocks)."""
    for layer in layers:
        yield layer
        yield from _walk(layer.sublayers())


def _has_batch_norm(layers) -> bool:
    return any(isinstance(l, _BatchNorm) for l in _walk(layers))


def _class_row_weights(class_weight, y, loss, out_shape):
    """Each row's weight from ``fit``'s ``class_weight`` (a dict or "balanced") and its labels."""
    if not loss.classifier:
        raise ValueError(f"fit: class_weight: needs a classifier loss (cross_entropy), the loss is {loss!r}")
    yh = ops.get(y).to_host(y) if not isinstance(y, np.ndarray) else y
    if isinstance(loss, _losses.CrossEntropy):
        labels, n_classes = yh, int(out_shape[-1])
    else:  # BCEWithLogits: one output, 0/1 targets
        if tuple(out_shape) != (1,) or not _host().isin(yh, (0, 1)).all():
            raise ValueError(
                f"fit: class_weight: with {loss!r} it needs one output and targets 0 or 1, "
                f"received outputs of shape {tuple(out_shape)}"
            )
        labels, n_classes = yh.reshape(-1).astype(np.int64), 2
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"fit: class_weight: expected a dict or 'balanced', received {class_weight!r}")
        counts = _host().bincount(labels, minlength=n_classes)
        present = _host().flatnonzero(counts)
        table = _host().zeros(n_classes, np.float64)
        table[present] = len(labels) / (len(present) * counts[present])
    elif isinstance(class_weight, dict):
        table = _host().ones(n_classes, np.float64)
        for key, value in class_weight.items():
            if (
                isinstance(key, bool)
                or not isinstance(key, (int, np.integer, float, np.floating))
                or not float(key).is_integer()
                or not 0 <= key < n_classes
            ):
                raise ValueError(
                    f"fit: class_weight: unknown class {key!r}: the model's classes are the labels 0 .. {n_classes - 1}"
                )
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ValueError(f"fit: class_weight: the weight of class {key!r} is {value!r}, not a number")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"fit: class_weight: the weight of class {key!r} must be finite and >= 0, received {value!r}"
                )
            table[int(key)] = value
    else:
        raise ValueError(f"fit: class_weight: expected a dict or 'balanced', received {type(class_weight).__name__}")
    return table.astype(np.float32)[labels]


@register_model
class Sequential:
    """A stack of layers applied in order.

    Parameters
    ----------
    layers : list of Layer
    seed : int, default 0
        Re-initializes every layer from its own generator (spawned from this seed), and seeds
        the epoch shuffles of ``fit`` unless ``fit`` gets its own seed.

    Examples
    --------
    >>> import numpy as np, vecnn as vn
    >>> from vecnn import layers as L
    >>> model = vn.Sequential([L.Dense(4, 8), L.ReLU(), L.Dense(8, 3)], seed=0)
    >>> model.predict(np.zeros((2, 4), np.float32)).shape
    (2, 3)
    """

    def __init__(self, layers: Iterable[Layer], seed: int | None = 0) -> None:
        if isinstance(layers, (str, bytes, dict)) or not hasattr(layers, "__iter__"):
            raise ValueError(f"Sequential: expected a list of layers, received {type(layers).__name__}")
        check_seed("Sequential: seed", seed)
        if not (seed is None or isinstance(seed, (int, np.integer))):  # it is saved with the model
            raise ValueError(f"Sequential: seed: expected a non-negative integer or None, received {seed!r}")
        layers = list(layers)
        if not layers:
            raise ValueError("Sequential: expected at least one layer, received an empty list")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ValueError(f"Sequential: layer {i} is {layer!r}, not a vecnn Layer")
        self.layers = layers
        self.seed = seed
        self.loss: _losses.Loss | None = None
        self.optimizer: _optim.Optimizer | None = None
        self.stop_training = False
        self.class_names = None
        self.metadata: dict = {}
        streams = np.random.SeedSequence(seed).spawn(len(layers) + 2)
        for layer, ss in zip(layers, streams):
            layer.init_params(np.random.default_rng(ss))
        self._shuffle_rng = np.random.default_rng(streams[-2])
        self._augment_rng = np.random.default_rng(streams[-1])
        self._build_flat()
        layers[0].input_grad = False  # nobody needs dL/dX of the data

    # -- the flat buffers ------------------------------------------------------------------
    def _build_flat(self):
        slots, offset = [], 0
        for layer in self.layers:
            for k, p in layer.params.items():
                slots.append((layer, k, offset, p.shape))
                offset += -(-p.size // _ALIGN) * _ALIGN
        first = next((p for layer in self.layers for p in layer.params.values()), None)
        backend = ops.get(first)
        dtype = DTYPE if first is None else first.dtype
        self.flat_params = backend.zeros(offset, dtype)
        self.flat_grads = backend.zeros(offset, dtype)
        for layer, k, start, shape in slots:
            size = math.prod(shape)
            view = self.flat_params[start : start + size].reshape(shape)
            view[...] = layer.params[k]
            layer.params[k] = view
            layer.grads[k] = self.flat_grads[start : start + size].reshape(shape)
        self._slots = slots

    # -- devices ---------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """``"cpu"`` or ``"gpu"``: where the parameters live (``to`` moves them)."""
        return ops.get(self.flat_params).device

    def to(self, device: str) -> "Sequential":
        """Move parameters, gradients, optimizer state and layer state to ``device``
        (``"cpu"``, ``"gpu"``, or ``"auto"``: the GPU when there is one); returns the model.

        ``fit``, ``predict`` and ``evaluate`` keep taking NumPy arrays and return NumPy results
        wherever the model lives. Asking for a GPU where there is none is a ``ValueError``
        naming what is missing. Model files do not depend on the device: ``save`` writes host
        arrays, ``load`` reads onto the CPU."""
        backend = ops.device(device)
        if backend.device == self.device:
            return self
        for layer in _walk(self.layers):
            layer.drop_scratch()
            for k, v in layer.state.items():
                layer.state[k] = backend.asarray(v)
        self.flat_params = backend.asarray(self.flat_params)
        self.flat_grads = backend.asarray(self.flat_grads)
        for layer, k, start, shape in self._slots:
            size = math.prod(shape)
            layer.params[k] = self.flat_params[start : start + size].reshape(shape)
            layer.grads[k] = self.flat_grads[start : start + size].reshape(shape)
        opt = self.optimizer
        if opt is not None:
            opt.state = {k: backend.asarray(v) for k, v in opt.state.items()}
            opt._previous = opt._scratch = None  # re-allocated on the device
        self.__dict__.pop("_data_parallel", None)
        return self

    @property
    def n_params(self) -> int:
        return sum(p.size for layer in self.layers for p in layer.params.values())

    def get_weights(self) -> dict:
        """A copy of all parameters and layer state (for restore-best and checkpoints)."""
        return {
            "params": self.flat_params.copy(),
            "state": [{k: v.copy() for k, v in layer.state.items()} for layer in self.layers],
        }

    def set_weights(self, weights: dict) -> None:
        backend = ops.get(self.flat_params)
        self.flat_params[...] = backend.asarray(weights["params"])
        for layer, state in zip(self.layers, weights["state"]):
            for k, v in state.items():
                layer.state[k][...] = backend.asarray(v)

    def rng_states(self) -> dict:
        """The state of every generator training draws from (shuffles, augmentation, dropout
        masks), as JSON data: with the weights and optimizer state, enough to resume bit-identically."""
        return {
            "shuffle": self._shuffle_rng.bit_generator.state,
            "augment": self._augment_rng.bit_generator.state,
            "layers": {
                str(i): rng.bit_generator.state
                for i, rng in enumerate(getattr(l, "rng", None) for l in self.layers)
                if isinstance(rng, np.random.Generator)
            },
        }

    def set_rng_states(self, states: dict) -> None:
        """Put back what ``rng_states`` returned; ``ValueError`` naming the generator whose
        state does not fit (all are checked before any is set)."""
        if not isinstance(states, dict) or not isinstance(states.get("layers"), dict):
            raise ValueError(
                f"rng states: expected an object with 'shuffle', 'augment' and 'layers', "
                f"received {type(states).__name__}"
            )
        targets: list[tuple[str, np.random.Generator, Any]] = [
            ("shuffle", self._shuffle_rng, states.get("shuffle")),
            ("augment", self._augment_rng, states.get("augment")),
        ]
        for i, state in states["layers"].items():
            layer = self.layers[int(i)] if str(i).isdigit() and int(i) < len(self.layers) else None
            rng = getattr(layer, "rng", None)
            if not isinstance(rng, np.random.Generator):
                raise ValueError(f"rng states: layers[{i!r}] names no layer of this model with a generator")
            targets.append((f"layers[{i}]", rng, state))
        for name, rng, state in targets:  # on a copy first: nothing half set
            try:
                copy = type(rng.bit_generator)()
                copy.state = state
            except (TypeError, ValueError, KeyError, OverflowError) as e:
                raise ValueError(f"rng states: {name}: not a {type(rng.bit_generator).__name__} state ({e})") from None
        for _, rng, state in targets:
            rng.bit_generator.state = state

    # -- shapes ----------------------------------------------------------------------------
    @property
    def input_shape(self):
        """Per-sample input shape the first layer expects (``None`` entries: any size)."""
        return self.layers[0].input_spec

    def shapes(self, input_shape: tuple) -> list[tuple]:
        """Per-sample output shape of every layer for per-sample ``input_shape``; raises a
        ``ValueError`` naming the first layer whose expected input does not match."""
        out, shape = [], tuple(input_shape)
        for i, layer in enumerate(self.layers):
            spec = layer.input_spec
            if spec is not None and (
                len(spec) != len(shape) or any(e is not None and e != s for e, s in zip(spec, shape))
            ):
                raise ValueError(
                    f"layer {i} {layer!r}: expected input of shape "
                    f"{fmt_shape((None, *spec))}, received {fmt_shape((None, *shape))}"
                )
            shape = tuple(layer.output_shape(shape))
            out.append(shape)
        return out

    # -- forward / backward ----------------------------------------------------------------
    def forward(self, x: Any, training: bool = False) -> Any:
        for _, forward, _ in self._plan():
            x = forward(x, training)
        return x

    def backward(self, grad: Any) -> Any:
        for _, _, backward in reversed(self._plan()):
            grad = backward(grad)
        return grad

    def _plan(self):
        """The layers as run, as ``(layers, forward, backward)`` steps: two layers are one step
        where the first says it fuses with the second (``Layer.fuse``: a Dense and the ReLU
        after it, bias and ReLU in one pass over the product; a ReLU and the MaxPool2D after
        it, whose pool reads the ReLU's input once since max commutes with ReLU); every other
        layer is a step of its own. The fused steps compute what the layers compute one after
        the other (tests compare them). Rebuilt when ``self.layers`` changes."""
        key = tuple(map(id, self.layers))
        if self.__dict__.get("_plan_key") != key:
            steps, i, layers = [], 0, self.layers
            while i < len(layers):
                a, b = layers[i], layers[i + 1] if i + 1 < len(layers) else None
                fused = a.fuse(b) if b is not None else None
                if fused is not None:
                    steps.append(((a, b), *fused))
                    i += 2
                else:
                    steps.append(((a,), a.forward, a.backward))
                    i += 1
            self._plan_steps, self._plan_key = steps, key
        return self._plan_steps

    # -- checks at the API edge ------------------------------------------------------------
    def _check_X(self, X, name="X", training=False):
        if not hasattr(X, "shape") or not hasattr(X, "dtype"):
            X = ops.cpu().asarray(X)
        if X.dtype.kind not in "fiub":
            raise ValueError(f"{name}: expected a numeric array, received dtype {X.dtype}")
        if X.ndim < 2:
            raise ValueError(f"{name}: expected an array of shape (n_samples, ...), received shape {X.shape}")
        if len(X) == 0:
            raise ValueError(f"{name}: is empty (shape {X.shape}); expected at least one sample")
        known = self.metadata.get("input_shape")
        if not training and known is not None and tuple(X.shape[1:]) != tuple(known):
            # a Flatten first accepts any shape of the right size: (1, 8, 8) would pass as
            # one sample of (8, 8) when it is one (1, 8, 8) image without its batch axis
            one = " (one sample without the batch axis? pass X[None])" if tuple(X.shape) == tuple(known) else ""
            raise ValueError(
                f"{name}: the model takes X of shape {fmt_shape((None, *known))}, received {fmt_shape(X.shape)}{one}"
            )
        self.shapes(X.shape[1:])
        dtype = self.flat_params.dtype
        if _lazy(X):  # a file on disk: checked in bounded chunks, each batch cast as it is gathered
            _check_finite_chunks(name, X, dtype)
            return X
        X = ops.get(X).xp.ascontiguousarray(X, dtype=dtype)  # float64 / uint8 input: cast once, up front
        check_finite(name, X)
        return X

    def _check_Xy(self, X, y, name="X", yname="y", training=False):
        X = self._check_X(X, name, training)
        y = y if hasattr(y, "shape") and hasattr(y, "dtype") else ops.cpu().asarray(y)
        if y.ndim == 0 or len(y) != len(X):
            raise ValueError(
                f"{name} and {yname} must have the same number of samples, "
                f"received {len(X)} and {y.shape[0] if y.ndim else 'a scalar'}"
            )
        y = self.loss.check_target(yname, self.shapes(X.shape[1:])[-1], y)
        return X, y

    # -- training --------------------------------------------------------------------------
    def fit(
        self,
        X: ArrayLike | Iterable,
        y: ArrayLike | None = None,
        loss: str | _losses.Loss | None = None,
        optimizer: str | _optim.Optimizer | None = None,
        epochs: int = 1,
        batch_size: int = 32,
        validation_data: tuple[ArrayLike, ArrayLike] | None = None,
        validation_split: float = 0.0,
        callbacks: list[Callback] | None = None,
        seed: int | None = None,
        verbose: int = 1,
        shuffle: bool = True,
        augment: Callable[[Any, np.random.Generator], Any] | None = None,
        initial_epoch: int = 0,
        workers: int | str = "auto",
        distributed: Any = False,
        sample_weight: ArrayLike | None = None,
        class_weight: dict | str | None = None,
        steps_per_epoch: int | None = None,
    ) -> History:
        """Train on ``(X, y)`` in shuffled mini-batches; returns a ``History``.

        Parameters
        ----------
        X : array, shape (n, *input_shape); or an iterable of batches
            A memory-mapped array (``np.memmap``, ``np.load(..., mmap_mode="r")``, e.g. a
            uint8 image file) is never read whole: its finiteness is checked in bounded chunks
            and each batch is read and cast to float32 as it is gathered.
            An iterable (a generator, any iterator, or a re-iterable such as a list) of
            ``(X_batch, y_batch)`` or ``(X_batch, y_batch, sample_weight_batch)`` tuples, with
            ``y=None`` (Keras-style): the batches are trained on as they come, in their order
            (``shuffle``, ``batch_size`` and ``validation_split`` do not apply), each checked as
            it arrives (a ``ValueError`` names the batch and what is wrong with it). See
            ``steps_per_epoch``. ``verbose=1`` shows one line per epoch (the number of samples
            is not known up front). Not with ``distributed``.
        y : array, shape (n,) integer labels for classifiers, or (n, outputs) targets; None
            when ``X`` yields batches
        loss : str or Loss, default: the model's loss, else "cross_entropy"
        optimizer : Optimizer or str, default: the model's optimizer, else Adam(lr=1e-3).
            The optimizer (and its state) is kept between ``fit`` calls.
        epochs, batch_size : int
            The last batch of an epoch holds what is left. With BatchNorm in the model, a last
            batch of one sample (whose statistics would be undefined) joins the batch before it,
            as Keras users expect training to go through; BatchNorm1D with ``batch_size=1`` or
            one training sample is refused up front.
        validation_data : (X_val, y_val), optional
        validation_split : float
            Fraction of the *last* samples of X, y held out for validation (before shuffling).
        callbacks : list of Callback
        seed : int, optional
            Seed of the epoch shuffles; by default a generator spawned from the model's seed
            that continues across ``fit`` calls.
        verbose : 0 silent, 1 progress bar, 2 one line per epoch
        shuffle : bool
            Draw a fresh order of the samples every epoch.
        augment : callable ``(batch, rng) -> batch``, optional
            Applied to each training batch (e.g. ``vecnn.data.Augment``), with the model's own
            augmentation generator.
        initial_epoch : int
            Epoch to start counting from (when resuming a run): trains epochs
            ``initial_epoch .. epochs-1``.
        workers : int or "auto"
            Threads that each run forward and backward on a share of every mini-batch, with
            single-threaded BLAS; their gradients are averaged (``vecnn.parallel``). "auto": one
            per BLAS thread for convolutional networks without BatchNorm (where it measures
            faster), else 1, which leaves all cores to BLAS.
        distributed : bool, "auto" or vecnn.distributed.Communicator
            Train data-parallel across the ranks of an MPI job (``mpiexec -n K python
            script.py``; needs ``pip install 'vecnn[mpi]'``): every rank calls ``fit`` with the
            same model, data and arguments; each global batch of ``batch_size`` rows is split
            across the ranks and their gradients summed with one Allreduce per step, which
            gives the weights one process computes (without dropout or BatchNorm). Rank 0
            alone shows progress and runs callbacks that write files. ``True``: all ranks of
            ``MPI.COMM_WORLD``; ``"auto"``: that when launched by ``mpiexec`` with several
            ranks; ``False`` (default): this process alone. See ``vecnn.distributed``.
        sample_weight : array of shape (n,), optional
            One finite non-negative weight per training row (cast to float32; with
            ``validation_split`` the held-out rows' weights are dropped with them). Each
            mini-batch's loss is the weighted mean ``sum_i w_i l_i / sum_i w_i`` of its rows'
            losses (scikit-learn's MLPClassifier since 1.7), so weights all equal train exactly
            as no weights, integer weights on a full batch equal repeating rows, and a batch
            whose weights are all zero changes nothing. The epoch's loss and metrics are the
            weighted means; validation is unweighted. Also with ``workers`` and ``distributed``
            (each share's gradient weighted by its share of the batch's weight sum).
        class_weight : dict {label: weight} or "balanced", optional
            Classifier losses only (``cross_entropy``; ``bce_with_logits`` with one output and
            0/1 targets): each row's weight is multiplied by its class's (classes missing from
            the dict: 1). ``"balanced"``: ``n_samples / (n_classes * count of the class)`` over
            the training rows, as scikit-learn computes it. With batches from an iterable: a
            dict only ("balanced" needs every label up front).
        steps_per_epoch : int, optional
            With ``X`` an iterable of batches: the batches of one epoch. Required for a one-shot
            iterator or generator; it then yields ``steps_per_epoch * epochs`` batches in all.
            If it runs out before, training stops (as Keras does) with a ``UserWarning``: the
            epoch it ran out in ends with the batches it had, and ``History`` holds the epochs
            trained. A re-iterable (a list) without ``steps_per_epoch``: one pass per epoch;
            with it, batches are taken in order across epochs, starting a new pass when one ends.
        """
        if loss is not None or self.loss is None:
            self.loss = _losses.get(loss if loss is not None else "cross_entropy")
        if optimizer is not None or self.optimizer is None:
            self.optimizer = _optim.get(optimizer if optimizer is not None else _optim.Adam(lr=1e-3))
        for name, value in (("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"fit: expected {name} to be a positive integer, received {name}={value!r}")
        if verbose not in (0, 1, 2) or isinstance(verbose, bool):
            raise ValueError(f"fit: expected verbose in (0, 1, 2), received {verbose!r}")
        check_seed("fit: seed", seed)
        if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float, np.number)):
            raise ValueError(f"fit: expected validation_split to be a number in [0, 1), received {validation_split!r}")
        if callbacks is not None and not isinstance(callbacks, (list, tuple)):
            raise ValueError(f"fit: expected callbacks to be a list of Callback, received {type(callbacks).__name__}")
        comm = None
        if distributed is not False and distributed is not None:
            from . import distributed as _dist

            comm = _dist.resolve(distributed)
        if comm is not None:  # each rank takes its share of the node's cores for the whole fit
            governor, blas = None, _threads.BlasLimit(comm.threads_per_rank())
        else:
            # BLAS threads chosen by timing the steps: all cores alone, fewer beside a busy
            # process (vecnn.threads); in force from the input checks to the last validation
            governor, blas = _threads.governor()
        try:
            return self._fit(
                X,
                y,
                epochs,
                batch_size,
                validation_data,
                validation_split,
                callbacks,
                seed,
                verbose,
                shuffle,
                augment,
                initial_epoch,
                workers,
                governor,
                comm,
                sample_weight,
                class_weight,
                steps_per_epoch,
            )
        finally:
            if blas is not None:
                blas.restore()

    def _fit(
        self,
        X,
        y,
        epochs,
        batch_size,
        validation_data,
        validation_split,
        callbacks,
        seed,
        verbose,
        shuffle,
        augment,
        initial_epoch,
        workers,
        governor,
        comm=None,
        sample_weight=None,
        class_weight=None,
        steps_per_epoch=None,
    ):
        """``fit`` after its argument checks, under the thread governor (None: no choice to
        make); ``comm``: the ranks of a distributed fit (``vecnn.distributed``)."""
        weights = (sample_weight, class_weight)
        if _yields_batches(X, y):
            if comm is not None:
                raise ValueError(
                    "fit(distributed): expected arrays X, y (every rank draws its share of each batch "
                    "from them); an iterable of batches trains in one process"
                )
            stream, validation_data, workers = self._check_stream(
                X, y, batch_size, validation_data, validation_split, workers, steps_per_epoch, weights
            )
            return self._fit_checked(
                stream, None, epochs, batch_size, validation_data, callbacks, seed, verbose, shuffle, augment,
                initial_epoch, workers, governor, None, ops.get(self.flat_params),
            )  # fmt: skip
        if y is None:
            raise ValueError(
                "fit: y is None: expected targets y for the array X (y=None is for an X that yields "
                "(X_batch, y_batch) batches)"
            )
        if steps_per_epoch is not None:
            raise ValueError(
                f"fit: steps_per_epoch={steps_per_epoch!r} applies to an X that yields batches; arrays "
                f"X, y are trained on whole every epoch, in batches of batch_size"
            )
        if comm is None:
            X, y, validation_data, workers, w = self._check_fit_data(
                X, y, batch_size, validation_data, validation_split, workers, None, weights
            )
        else:
            from . import distributed as _dist

            # every rank checks its input; an error on one rank is raised on all (naming it),
            # never left for the others to wait on in a collective
            X, y, validation_data, workers, w = _dist.checked_everywhere(
                comm,
                lambda: self._check_fit_data(
                    X, y, batch_size, validation_data, validation_split, workers, comm, weights
                ),
            )
        device = ops.get(self.flat_params)
        return self._fit_checked(
            X, y, epochs, batch_size, validation_data, callbacks, seed, verbose, shuffle, augment, initial_epoch,
            workers, governor, comm, device, w,
        )  # fmt: skip

    def _check_fit_data(
        self, X, y, batch_size, validation_data, validation_split, workers, comm=None, weights=(None, None)
    ):
        """The training and validation arrays, checked and cast, the worker count and the
        training rows' weights (None: unweighted)."""
        X, y = self._check_Xy(X, y, training=True)
        w = self._check_weights(*weights, y, X.shape[1:])
        self.metadata["input_shape"] = list(X.shape[1:])  # what predict and evaluate then expect
        if comm is not None:
            if workers not in ("auto", 1):
                raise ValueError(
                    f"fit: workers={workers!r} splits batches across threads; a distributed fit "
                    f"runs one worker per rank (workers=1 or 'auto')"
                )
            workers = 1
        workers = _parallel.check_workers(self, workers, batch_size)
        if validation_data is not None and validation_split:
            raise ValueError("fit: pass validation_data or validation_split, not both")
        if validation_split:
            if not 0 < validation_split < 1:
                raise ValueError(f"fit: expected 0 < validation_split < 1, received {validation_split!r}")
            n_val = int(round(len(X) * validation_split))
            if n_val < 1 or n_val >= len(X):
                raise ValueError(
                    f"fit: validation_split={validation_split} of {len(X)} samples leaves "
                    f"{n_val} for validation and {len(X) - n_val} for training"
                )
            X, y, validation_data = X[:-n_val], y[:-n_val], (X[-n_val:], y[-n_val:])
            if w is not None:
                w = w[:-n_val]
        if w is not None and not float(w.sum(dtype=np.float64)) > 0:
            raise ValueError(
                f"fit: sample_weight: the weights of the {len(w)} training rows are all zero "
                f"(after class_weight{' and validation_split' if validation_split else ''})"
            )
        validation_data = self._check_validation(validation_data)
        if comm is not None:
            k = comm.size
            bn = _has_batch_norm(self.layers)
            need = 2 * k if bn else k
            if batch_size < need or len(X) < need:
                why = "two rows of every batch (BatchNorm's statistics)" if bn else "at least one row of every batch"
                raise ValueError(
                    f"fit(distributed): each of the {k} ranks needs {why}: expected batch_size and the "
                    f"training samples >= {need}, received batch_size={batch_size} and {len(X)} samples"
                )
        return X, y, validation_data, workers, w

    def _check_weights(self, sample_weight, class_weight, y, input_shape):
        """The rows' weights (float32, shape (n,)) from ``fit``'s ``sample_weight`` and
        ``class_weight``, or None when neither is given."""
        if sample_weight is None and class_weight is None:
            return None
        loss = self.loss
        if not getattr(loss, "weighted", False):
            what = "sample_weight" if sample_weight is not None else "class_weight"
            raise ValueError(f"fit: {what}: the loss {loss!r} does not take per-sample weights")
        n = len(y)
        w = None
        if sample_weight is not None:
            a = sample_weight if hasattr(sample_weight, "shape") and hasattr(sample_weight, "dtype") else None
            if a is None:
                try:
                    a = _host().asarray(sample_weight)
                except (TypeError, ValueError) as e:
                    raise ValueError(f"fit: sample_weight: expected an array of shape ({n},), {e}") from None
            a = ops.get(a).to_host(a) if not isinstance(a, np.ndarray) else a
            if a.dtype.kind not in "fiub":
                raise ValueError(f"fit: sample_weight: expected real numbers, received dtype {a.dtype}")
            if a.ndim != 1 or len(a) != n:
                raise ValueError(
                    f"fit: sample_weight: expected shape ({n},), one weight per row of X, received {a.shape}"
                )
            if a.dtype.kind == "f" and not _host().isfinite(a).all():
                bad = int(_host().flatnonzero(~_host().isfinite(a))[0])
                raise ValueError(f"fit: sample_weight: contains NaN or Inf, the first at index {bad} ({a[bad]})")
            if len(a) and a.min() < 0:
                bad = int(_host().flatnonzero(a < 0)[0])
                raise ValueError(f"fit: sample_weight: weights must be >= 0, received {a[bad]} at index {bad}")
            w = a.astype(np.float32)
            if not _host().isfinite(w).all():
                raise ValueError("fit: sample_weight: weights too large for float32")
        if class_weight is not None:
            cw = _class_row_weights(class_weight, y, loss, self.shapes(input_shape)[-1])
            w = cw if w is None else w * cw
        return w

    def _check_stream(self, X, y, batch_size, validation_data, validation_split, workers, steps, weights):
        """``fit``'s checks for an iterable of batches: a ``_Stream`` of them, the checked
        validation data and the worker count."""
        sample_weight, class_weight = weights
        if y is not None:
            raise ValueError(f"fit: X yields (X_batch, y_batch) batches: expected y=None, received {type(y).__name__}")
        if validation_split:
            raise ValueError(
                "fit: validation_split holds out the last rows of arrays X, y; with batches from an "
                "iterable pass validation_data=(X_val, y_val)"
            )
        if sample_weight is not None:
            raise ValueError(
                "fit: sample_weight: with batches from an iterable, give each batch's weights as its "
                "third element: (X_batch, y_batch, sample_weight_batch)"
            )
        if isinstance(class_weight, str):
            raise ValueError(
                f"fit: class_weight={class_weight!r} needs every label up front; with batches from an "
                f"iterable pass a dict {{label: weight}}"
            )
        if class_weight is not None and not isinstance(class_weight, dict):
            raise ValueError(
                f"fit: class_weight: expected a dict or 'balanced', received {type(class_weight).__name__}"
            )
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1):
            raise ValueError(f"fit: expected steps_per_epoch to be a positive integer, received {steps!r}")
        one_shot = hasattr(X, "__next__")
        if one_shot and steps is None:
            raise ValueError(
                f"fit: X is a one-shot {type(X).__name__} of batches: pass steps_per_epoch (the batches "
                f"of one epoch), as it cannot be started again for the next epoch"
            )
        workers = _parallel.check_workers(self, workers, batch_size)
        validation_data = self._check_validation(validation_data)
        return _Stream(self, X, steps, class_weight), validation_data, workers

    def _check_validation(self, validation_data):
        """``fit``'s ``validation_data`` checked and cast (None stays None)."""
        if validation_data is None:
            return None
        try:
            Xv, yv = validation_data
        except (TypeError, ValueError):
            raise ValueError("fit: validation_data must be a pair (X_val, y_val)") from None
        return self._check_Xy(Xv, yv, "validation_data[0]", "validation_data[1]")

    def _fit_checked(
        self, X, y, epochs, batch_size, validation_data, callbacks, seed, verbose, shuffle, augment, initial_epoch,
        workers, governor, comm, device, w=None,
    ):  # fmt: skip
        stream = X if isinstance(X, _Stream) else None
        if stream is None and device is not ops.get(X) and augment is None:
            # the training data moves to the model's device once (augmentation draws from a
            # NumPy generator on the host, and memory-mapped data is read batch by batch: then
            # each batch moves after it is cast and augmented)
            X, y = X if _lazy(X) else device.asarray(X), device.asarray(y)
        bn = next((l for l in _walk(self.layers) if isinstance(l, BatchNorm1D)), None)
        if stream is None and bn is not None and min(batch_size, len(X)) < 2:
            raise ValueError(
                f"fit: {bn!r} learns its statistics from at least 2 samples per batch; "
                f"received batch_size={batch_size} and {len(X)} training sample(s)"
            )

        rng = np.random.default_rng(seed) if seed is not None else self._shuffle_rng
        history = History()
        cbs = [history, *(callbacks or [])]
        root = comm is None or comm.is_root
        if verbose == 1 and root and stream is None:
            cbs.append(ProgressBar(epochs, len(X)))
        elif verbose == 1 and root:  # batches from an iterable: how many samples an epoch has is unknown
            cbs.append(EpochLogger(epochs))
        elif verbose == 2 and root:
            cbs.append(EpochLogger(epochs))
        for cb in cbs:
            if not isinstance(cb, Callback):
                raise ValueError(f"fit: callbacks must be vecnn Callback instances, received {cb!r}")
        if not root:  # files are written, and progress shown, by rank 0
            cbs = [cb for cb in cbs if not cb.root_only]
        for cb in cbs:
            cb.set_model(self)
        self.stop_training = False
        if comm is not None:
            from . import distributed as _dist

            split: Any = _dist.MPIDataParallel(self, comm)
            split.start(
                X,
                y,
                validation_data,
                {
                    "batch_size": batch_size,
                    "epochs": [initial_epoch, epochs],
                    "seed": seed,
                    "shuffle": shuffle,
                    "augment": None if augment is None else repr(augment),
                    "callbacks": [type(cb).__name__ for cb in cbs if not cb.root_only],
                    "sample weights": None if w is None else _dist.digest(w),
                },
            )
            guard = _dist.guard(comm, "fit", collective=(FloatingPointError,))
        else:
            split = _parallel.DataParallel.of(self, workers) if workers > 1 else None
            guard = nullcontext()
        if split is not None:
            governor = None  # the split sets its own threads: one per worker (per rank)
        changes_before = len(governor.history) if governor is not None else 0
        with guard:
            for cb in cbs:
                cb.on_train_begin()
            for epoch in range(initial_epoch, epochs):
                if stream is not None and not stream.ready():
                    stream.warn(epoch, initial_epoch, epochs)
                    break
                for cb in cbs:
                    cb.on_epoch_begin(epoch)
                with np.errstate(over="ignore", invalid="ignore"), split or nullcontext():
                    # divergence is detected and reported in _train_epoch (on every rank alike)
                    logs = self._train_epoch(
                        X, y, batch_size, rng if shuffle else None, epoch, cbs, augment, split, governor, w
                    )
                if logs is None:  # (a stream that peeked a batch always has one)
                    raise RuntimeError("fit: an epoch without batches")
                if validation_data is not None:
                    scores = (
                        split.evaluate(*validation_data)
                        if comm is not None
                        else self.evaluate(*validation_data, _checked=True)
                    )
                    logs.update({f"val_{k}": v for k, v in scores.items()})
                for cb in cbs:
                    cb.on_epoch_end(epoch, logs)
                if comm is not None:
                    self.stop_training = split.should_stop(self.stop_training)
                if stream is not None and stream.exhausted and not self.stop_training:
                    stream.warn(epoch + 1, initial_epoch, epochs)
                    self.stop_training = True
                if self.stop_training:
                    break
            for cb in cbs:
                cb.on_train_end()
        # (step, BLAS threads) at every change the governor made; empty when it made none
        history.thread_changes = governor.history[changes_before:] if governor is not None else []
        return history

    def _train_epoch(self, X, y, batch_size, rng, epoch, cbs, augment=None, split=None, governor=None, w=None):
        """One epoch; ``X``: the training array (batches drawn from it in ``rng``'s order, or in
        order for None) or a ``_Stream`` of batches. Returns the epoch's logs, or None when a
        stream had no batch left."""
        device = ops.get(self.flat_params)
        ranks = getattr(split, "ranks", 1)  # a distributed step splits each batch across ranks
        if isinstance(X, _Stream):
            data, batches = ops.cpu(), X.epoch()
        else:
            data = ops.get(X)
            batches = self._array_batches(X, y, batch_size, rng, ranks, split, w)
        opt, loss = self.optimizer, self.loss
        params, grads = self.flat_params, self.flat_grads
        # layer state a step changes (BatchNorm's running statistics), restored with the weights
        # when the step turns out non-finite
        state = [v for layer in self.layers for v in layer.state.values()]
        saved = [device.xp.empty_like(v) for v in state]
        total_loss, seen, sums = 0.0, 0, {}
        batch_cbs = [cb for cb in cbs if type(cb).on_batch_end is not Callback.on_batch_end]
        step = -1
        for step, (xs, ys, ws, m, weight, total) in enumerate(batches):
            # xs, ys: the rows this process computes of a batch of m rows; ws: their weights
            # (None: all equal); weight, total: their weights' sum and the whole batch's
            for keep, v in zip(saved, state):
                keep[...] = v
            if augment is not None:
                xs = augment(xs, self._augment_rng)
            if data is not device:  # augmented on the host: now to the device
                xs, ys = device.asarray(xs), device.asarray(ys)
            if split is None:
                out = self.forward(xs, training=True)
                value = loss.forward(out, ys) if ws is None else loss.forward(out, ys, device.asarray(ws))
                self.backward(loss.backward())
                metrics = loss.last_metrics()
            elif ranks > 1:  # the batch split across ranks (its share here)
                value, metrics = split.step(xs, ys, m, ws, weight, total)
            else:  # the batch split across worker threads
                value, metrics = split.step(xs, ys, m, ws)
            if not (math.isfinite(value) and opt.step(params, grads)):
                if math.isfinite(value):
                    opt.undo(params)
                for keep, v in zip(saved, state):
                    v[...] = keep
                what = "loss" if not math.isfinite(value) else "updated weights"
                raise FloatingPointError(
                    f"training diverged at epoch {epoch + 1}, step {step + 1}: the {what} became "
                    f"non-finite (NaN or Inf); the weights from before that step were restored. "
                    f"Try a smaller learning rate or gradient clipping (clip_norm=...)"
                )
            total_loss += value * weight
            seen += weight
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v * weight
            if batch_cbs:  # running means, only when someone shows them
                running = {"loss": total_loss / seen, **{k: s / seen for k, s in sums.items()}}
                for cb in batch_cbs:
                    cb.on_batch_end(step, {"size": m, "running": running})
            if governor is not None:
                governor.tick(m)
        if governor is not None:
            governor.pause()  # validation and callbacks are not steps
        if step < 0:
            return None  # a stream that ran out
        if ranks > 1:  # the whole epoch's figures, the same on every rank
            total_loss, seen, sums = split.epoch_logs(total_loss, seen, sums)
        seen = seen or 1  # (weights all zero in an epoch: nothing to average)
        return {"loss": total_loss / seen, **{k: s / seen for k, s in sums.items()}}

    def _array_batches(self, X, y, batch_size, rng, ranks, split, w):
        """An epoch's batches of the training arrays, as ``_train_epoch`` takes them."""
        n = len(X)
        data = ops.get(X)
        starts = list(range(0, n, batch_size))
        if len(starts) > 1 and n - starts[-1] < 2 * ranks and _has_batch_norm(self.layers):
            starts.pop()  # BatchNorm cannot learn from one sample (per rank): it joins the batch before
        ends = starts[1:] + [n]
        # one buffer for every batch of the epoch: what a batch's forward caches, its backward uses up
        widest = max(e - s for s, e in zip(starts, ends))
        lazy = _lazy(X)  # memory-mapped: each batch read and cast to the parameters' dtype here
        batch = data.empty((widest, *X.shape[1:]), self.flat_params.dtype if lazy else X.dtype)
        order = rng.permutation(n) if rng is not None else data.xp.arange(n, dtype=np.int64)
        if data.device != "cpu":
            order = data.asarray(order)
        for start, end in zip(starts, ends):
            idx = order[start:end]
            m = mine = len(idx)  # the batch's rows, and those this process computes
            ws, weight, total = None, mine, m  # rows' weights (None: all 1), this process's and the batch's sums
            if w is not None:
                ws = w[data.to_host(idx) if data.device != "cpu" else idx]
                total = weight = float(ws.sum(dtype=np.float64))
                if ws[0] > 0 and ws.min() == ws.max():
                    ws = None  # weights all equal: the weighted mean is the mean (the fused pass)
            if ranks > 1:
                lo, hi = split.rows(m)
                idx, mine = idx[lo:hi], hi - lo
                weight = mine
                if w is not None:
                    weight = float(w[data.to_host(idx) if data.device != "cpu" else idx].sum(dtype=np.float64))
                    ws = None if ws is None else ws[lo:hi]
            if lazy:
                xs = batch[:mine]
                xs[...] = X[idx]  # the batch's rows read from the file, cast as they are copied
            else:
                xs = data.gather(X, idx, batch[:mine])  # compiled: split across BLAS's threads
            yield xs, y[idx], ws, m, weight, total

    # -- inference -------------------------------------------------------------------------
    def predict(self, X: ArrayLike, batch_size: int = 1024) -> np.ndarray:
        """Model outputs (logits for classifiers) for ``X``, computed ``batch_size`` rows at a time."""
        X = self._check_X(X)
        with np.errstate(over="ignore", invalid="ignore"):  # reported below, with the sample
            out = self._predict(X, batch_size)
        _check_outputs("predict", out)
        return out

    def _predict(self, X, batch_size=1024):
        """Outputs in ``X``'s memory (the host for NumPy input), each batch computed on the
        model's device."""
        out = None
        data, device = ops.get(X), ops.get(self.flat_params)
        dtype = self.flat_params.dtype
        for start in range(0, len(X), batch_size):
            y = self.forward(device.asarray(_rows(X, start, start + batch_size, dtype)), training=False)
            if out is None:
                out = data.empty((len(X), *y.shape[1:]), y.dtype)
            out[start : start + len(y)] = data.asarray(device.to_host(y)) if data is not device else y
        return out

    def predict_proba(self, X: ArrayLike, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities: softmax of the logits (cross-entropy) or their sigmoid (BCE)."""
        logits = self.predict(X, batch_size)
        xp = ops.get(logits).xp
        if isinstance(self.loss, _losses.BCEWithLogits):
            return 1 / (1 + xp.exp(-logits))
        if self.loss is not None and not isinstance(self.loss, _losses.CrossEntropy):
            raise ValueError(f"predict_proba: the model was trained with {self.loss!r}, not a classifier loss")
        e = xp.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def evaluate(self, X: ArrayLike, y: ArrayLike, batch_size: int = 1024, _checked: bool = False) -> dict[str, float]:
        """``{"loss": ..., "accuracy": ...}`` for classifiers, ``{"loss", "mse", "mae"}`` for regression."""
        if self.loss is None:
            self.loss = _losses.get("cross_entropy")
        loss = self.loss
        Xc: Any = X  # arrays once checked (fit's validation data comes checked)
        yc: Any = y
        if not _checked:
            Xc, yc = self._check_Xy(X, y)
        sums: dict[str, float] = {}
        n = len(Xc)
        device = ops.get(self.flat_params)
        dtype = self.flat_params.dtype
        for start in range(0, n, batch_size):
            xs = device.asarray(_rows(Xc, start, start + batch_size, dtype))
            ys = device.asarray(yc[start : start + batch_size])
            with np.errstate(over="ignore", invalid="ignore"):
                out = self.forward(xs, training=False)
            if not _checked:  # (fit's validation reports through its loss)
                _check_outputs("evaluate", out, start)
            m = len(xs)
            for k, v in {"loss": loss.forward(out, ys), **loss.metrics(out, ys)}.items():
                sums[k] = sums.get(k, 0.0) + v * m
        return {k: s / n for k, s in sums.items()}

    # -- persistence and description ------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the model to one file (safetensors weights + JSON metadata), atomically."""
        from .io import save_model

        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ValueError(f"save: expected a file path, received {path!r}")
        save_model(self, path)

    def config(self) -> list[dict]:
        return [{"name": type(l).registered_name, "config": l.config()} for l in self.layers]

    def summary(self, input_shape: tuple | None = None) -> str:
        """A table of layers, output shapes, parameter counts and FLOPs per sample.

        Without an input shape (the model never trained, and its first layer, e.g. a Flatten,
        takes any): the output shape of a layer is inferred from the input the next layer
        expects (a Flatten before ``Dense(64, ...)`` outputs ``(n, 64)``), and everything from
        there on is computed; the rest reads "unknown" with a note on ``summary(input_shape=...)``."""
        input_shape = tuple(input_shape or self.metadata.get("input_shape") or self.input_shape or ())
        known = bool(input_shape) and all(d is not None for d in input_shape)
        n_layers = len(self.layers)
        shapes: list = self.shapes(input_shape) if known else [None] * n_layers
        first = 0 if known else n_layers  # the first layer whose input shape is known
        if not known:
            for i in range(1, n_layers):
                spec = self.layers[i].input_spec
                if spec is None or not spec or any(d is None for d in spec):
                    continue
                try:
                    tail = [tuple(spec)]
                    for layer in self.layers[i:]:
                        tail.append(tuple(layer.output_shape(tail[-1])))
                except (ValueError, TypeError, IndexError):
                    break  # a shape that does not fit: say unknown rather than guess
                shapes[i - 1 :] = tail
                first = i
                break
        rows, flops = [], 0
        for i, (layer, out) in enumerate(zip(self.layers, shapes)):
            n = sum(p.size for p in layer.params.values())
            f = layer.flops(input_shape if i == 0 else shapes[i - 1]) if i >= first else None
            flops += f or 0
            rows.append(
                (
                    f"{i} {type(layer).__name__}",
                    "unknown" if out is None else fmt_shape((None, *out)),
                    f"{n:,}",
                    "unknown" if f is None else f"{f:,}",
                )
            )
        head = ("layer", "output shape", "params", "FLOPs/sample")
        widths = [max(len(r[c]) for r in [head, *rows]) for c in range(4)]
        line = lambda r: "  ".join(s.ljust(w) if c < 2 else s.rjust(w) for c, (s, w) in enumerate(zip(r, widths)))
        sep = "-" * len(line(head))
        if known:
            total = f"total params: {self.n_params:,}   forward FLOPs/sample: {flops:,}"
        elif first < n_layers:
            span = lambda a, b: f"layer {a}" if a == b else f"layers {a}-{b}"  # noqa: E731
            rest = (  # layer first - 1's output is inferred, not its FLOPs
                f"the output shapes of {span(0, first - 2)} and the FLOPs of {span(0, first - 1)}"
                if first > 1
                else "the FLOPs of layer 0"
            )
            total = (
                f"total params: {self.n_params:,}   forward FLOPs/sample of {span(first, n_layers - 1)}: {flops:,}\n"
                f"input shape unknown: summary(input_shape=...) for {rest}"
            )
        else:
            total = (
                f"total params: {self.n_params:,}\n"
                f"input shape unknown: summary(input_shape=...) for the output shapes and FLOPs"
            )
        return "\n".join([line(head), sep, *map(line, rows), sep, total])

    def __repr__(self):
        inner = ",\n  ".join(map(repr, self.layers))
        return f"Sequential([\n  {inner}\n])"
