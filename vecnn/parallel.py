"""Data parallelism inside one process: each mini-batch split across worker threads.

BLAS parallelizes one matrix product at a time; the memory-bound work between products
(im2col, col2im, pooling, activations) runs on one core. For convolutional networks that work
is a large share of a step, so on a multi-core CPU the batch is split instead: each worker runs
forward and backward on its share of the rows, with single-threaded BLAS, into its own gradient
buffer, and the shares' mean gradients are combined weighted by their row counts, which is the
whole batch's mean gradient (the same thing an MPI Allreduce does across machines). NumPy's
matrix products and vecnn's compiled kernels release the GIL, so the workers run in parallel.

Replicas are built from the model's layer configurations and share its parameter arrays; only
layers whose result for a sample does not depend on the other samples of the batch qualify
(each layer says so: ``Layer.batch_independent``): BatchNorm's batch statistics would change
with the split. Dropout qualifies:
each replica draws its masks from a generator seeded from the layer's own generator at the
start of every epoch, so a seeded run is reproducible and resumes like any other (its masks
differ from a one-worker run's, as masks from any other stream would).
"""

from __future__ import annotations

import threading

import numpy as np

from . import layers as L

#: rows each worker should get at least; smaller shares waste more than they gain
MIN_ROWS = 32
#: the most workers one fit may ask for (each is a thread and a copy of the model)
MAX_WORKERS = 256


def blas_threads() -> int:
    """The thread count of the BLAS NumPy uses (1 when unknown)."""
    from threadpoolctl import threadpool_info

    counts = [i.get("num_threads", 1) for i in threadpool_info() if i.get("user_api") == "blas"]
    return max(1, min(counts)) if counts else 1


def auto_workers(model, batch_size: int) -> int:
    """How many workers ``fit(workers="auto")`` uses: one per BLAS thread for convolutional
    models whose layers are all ``batch_independent`` (measured faster there: the memory-bound work
    between products runs on every core), else 1 (dense networks: BLAS threads win)."""
    if model.device != "cpu" or not any(isinstance(l, L.Conv2D) for l in model.layers):
        return 1  # (on a GPU the whole batch is one set of kernels)
    if not all(l.batch_independent for l in model.layers):
        return 1
    return max(1, min(blas_threads(), batch_size // MIN_ROWS))


def check_workers(model, workers, batch_size: int) -> int:
    if workers == "auto":
        return auto_workers(model, batch_size)
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"fit: expected workers to be a positive integer or 'auto', received {workers!r}")
    if workers > MAX_WORKERS:  # each worker is a thread and a copy of the model
        raise ValueError(f"fit: workers={workers} is more than vecnn starts: at most {MAX_WORKERS}")
    if workers > 1 and model.device != "cpu":
        raise ValueError(
            f"fit: workers={workers} splits batches across CPU threads; a model on the "
            f"{model.device} trains with workers=1"
        )
    if workers > 1:
        bad = [f"{i} {l!r}" for i, l in enumerate(model.layers) if not l.batch_independent]
        if bad:
            raise ValueError(
                f"fit: workers={workers} splits each batch, which changes what these layers "
                f"compute (batch statistics or random masks): layer {', layer '.join(bad)}; "
                f"use workers=1"
            )
    return int(workers)


class DataParallel:
    """``workers`` replicas of ``model`` (the model itself is the first), each with its own
    gradient buffer and worker thread; ``step(x, y)`` leaves the batch's mean gradient in the
    model's ``flat_grads`` and returns the loss and metrics of the whole batch. Use as a context
    manager: the threads stop and BLAS gets its threads back on exit."""

    def __init__(self, model, workers: int):
        self.model = model
        self.replicas = [model] + [_replica(model) for _ in range(workers - 1)]
        self.key = _key(model, workers)
        self._jobs = [None] * workers
        self._results = [None] * workers
        self._threads: list[threading.Thread] = []
        self._limit = None

    @classmethod
    def of(cls, model, workers: int) -> "DataParallel":
        """The model's replicas from its last ``fit`` when its layers and parameter arrays are
        the same (so a ``fit`` per epoch allocates their scratch memory once), else new ones."""
        cached = model.__dict__.get("_data_parallel")
        if cached is None or cached.key != _key(model, workers):
            cached = model._data_parallel = cls(model, workers)
        return cached

    def __enter__(self):
        from threadpoolctl import threadpool_limits

        for rep in self.replicas[1:]:  # fit may have been given another loss
            rep.loss = type(self.model.loss).from_config(self.model.loss.config())
            for mine, theirs in zip(rep.layers, self.model.layers):
                if isinstance(getattr(theirs, "rng", None), np.random.Generator):
                    mine.rng = np.random.default_rng(theirs.rng.integers(2**63))  # this epoch's masks
        self._go = [threading.Semaphore(0) for _ in self.replicas]
        self._done = threading.Semaphore(0)
        self._threads = []
        self._limit = threadpool_limits(1, user_api="blas")  # each worker multiplies on one core
        try:
            for i in range(1, len(self.replicas)):
                t = threading.Thread(target=self._serve, args=(i,), daemon=True, name=f"vecnn-worker-{i}")
                t.start()
                self._threads.append(t)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for i in range(1, len(self.replicas)):
            self._jobs[i] = None
            self._go[i].release()
        try:
            for t in self._threads:
                t.join()
        finally:  # even if a second Ctrl-C cuts the wait short
            self._limit.restore_original_limits()
            # nothing thread-bound stays behind (a model remains copyable)
            self._go = self._done = self._limit = None
            self._threads, self._results = [], [None] * len(self.replicas)
        return False

    def _serve(self, i):
        while True:
            self._go[i].acquire()
            job = self._jobs[i]
            if job is None:
                return
            try:
                with np.errstate(over="ignore", invalid="ignore"):  # as in fit: divergence is reported
                    self._results[i] = _forward_backward(self.replicas[i], *job)
            except BaseException as e:  # handed to the main thread, raised there
                self._results[i] = e
            self._done.release()

    #: processes a batch is split across (threads share the process: the whole batch is here)
    ranks = 1

    def step(self, x, y, m=None, w=None):
        """Forward and backward on the batch ``x, y`` split across the workers; ``w``: the rows'
        weights (None: all 1), each share's gradient then weighted by its share of their sum."""
        n, k = len(x), len(self.replicas)
        bounds = [n * i // k for i in range(k + 1)]
        shares = [(bounds[i], bounds[i + 1]) for i in range(k) if bounds[i + 1] > bounds[i]]
        cut = (lambda s, e: (x[s:e], y[s:e])) if w is None else (lambda s, e: (x[s:e], y[s:e], w[s:e]))
        for i, (s, e) in enumerate(shares[1:], 1):
            self._jobs[i] = cut(s, e)
            self._go[i].release()
        first = _forward_backward(self.model, *cut(*shares[0]))
        for _ in shares[1:]:
            self._done.acquire()
        results = [first] + self._results[1 : len(shares)]
        for r in results:
            if isinstance(r, BaseException):
                raise r
        # each share's gradient is the (weighted) mean over its rows: weight it by its share of
        # the batch's rows (or of their weights' sum)
        if w is None:
            weights = [(e - s) / n for s, e in shares]
        else:
            sums = [float(w[s:e].sum(dtype=np.float64)) for s, e in shares]
            total = sum(sums)
            weights = [t / total if total > 0 else 0.0 for t in sums]
        grads = self.model.flat_grads
        grads *= weights[0]  # Python floats keep the buffers' dtype
        for rep, w in zip(self.replicas[1 : len(shares)], weights[1:]):
            g = rep.flat_grads
            g *= w
            grads += g
        value = sum(w * v for w, (v, _) in zip(weights, results))
        metrics = {key: sum(w * m[key] for w, (_, m) in zip(weights, results)) for key in results[0][1]}
        return value, metrics


def _key(model, workers):
    return (
        workers,
        id(model.flat_params),
        tuple(id(l) for l in model.layers),
        tuple(id(p) for l in model.layers for p in l.params.values()),
        repr([l.config() for l in model.layers]),
    )  # a layer changed in place (Dropout.rate)


def _forward_backward(model, x, y, w=None):
    loss = model.loss
    out = model.forward(x, training=True)
    value = loss.forward(out, y) if w is None else loss.forward(out, y, w)
    model.backward(loss.backward())
    return value, loss.last_metrics()


def _replica(model):
    """A model of the same layers (built from their configurations) that shares ``model``'s
    parameter and state arrays and has its own gradient buffer and scratch memory."""
    dtype = model.flat_params.dtype
    layers = [type(l).from_config(l.config()).astype(dtype) for l in model.layers]
    rep = type(model)(layers, seed=model.seed)
    for mine, theirs in zip(rep.layers, model.layers):
        for k in theirs.params:
            mine.params[k] = theirs.params[k]  # views into model.flat_params
        mine.state = theirs.state
        mine.input_grad = theirs.input_grad
    rep.flat_params = model.flat_params
    return rep
