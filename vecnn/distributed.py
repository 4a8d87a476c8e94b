"""Data-parallel training across processes over MPI (mpi4py): ``mpiexec -n K vecnn train``.

One copy of the model per process (a *rank*). Every rank draws the same shuffle of the
training set from the seed, so every rank knows every global batch; each computes forward and
backward on its own contiguous share of the batch's rows (rank r of K takes rows
``m*r//K .. m*(r+1)//K``), scales its share's mean gradient by its share of the batch, and one
in-place ``Allreduce`` of the flat gradient buffer (buffer form, ``MPI.IN_PLACE``, never pickled
objects) sums them: every rank then holds the whole batch's mean gradient and takes the same
optimizer step. With no dropout and no BatchNorm, K ranks and global batch B compute the
weights one process computes with batch B split in the same K shares (``workers=K``: the same
float32 operations, equal to the bit, tested for K=2); against one process with one worker the
batch's sums run in another order, which agrees to float32 rounding unless training amplifies it
(the README's MPI section measures a case: Adam and a nearly dead ReLU unit). The reduction is
one blocking Allreduce after the backward pass: an Iallreduce per layer as its gradients are
ready (PyTorch DDP's buckets) measured slower here (``benchmarks/bench_mpi_overlap.py``).

What else a rank does, and why (the choices a user may want to know):

* **Identical start**: parameters, layer state (BatchNorm running statistics) and optimizer
  state are broadcast from rank 0 at the start of every distributed ``fit``; everything else
  that decides the run (vecnn version, architecture, loss, optimizer settings and step count,
  batch size, epochs, the training and validation data's digests, the shuffle generator's state)
  is compared across ranks first, and a difference refuses to start on every rank with a
  ``ValueError`` naming the field and the ranks (``Communicator.agree``).
* **Threads**: ranks on one node split its cores (ranks per node from MPI's shared-memory split,
  ``COMM_TYPE_SHARED``): each limits its BLAS threads to ``cores // ranks_per_node`` for the
  whole ``fit``, so K ranks on a node never oversubscribe it.
* **Random masks**: at the start of every epoch each layer's generator (Dropout) and the
  augmentation generator hand every rank a generator of its own, seeded from one number drawn
  from the shared generator and the rank (``SeedSequence(n, spawn_key=(rank,))``): masks differ
  across ranks, a seeded run is reproducible, and a resumed run draws what the uninterrupted one
  drew (the shared generators, saved in checkpoints, advance identically on every rank).
* **BatchNorm**: per-rank batch statistics (each rank normalizes its share with the share's
  mean and variance, as PyTorch DDP and Horovod do without SyncBatchNorm: no communication in
  the forward pass); the running statistics are averaged across ranks at the end of every
  epoch, so every rank holds the same model. With BatchNorm each rank needs at least two rows of
  every batch: ``batch_size >= 2 * K``, and a last batch with fewer than ``2 * K`` rows joins
  the batch before it.
* **Metrics and validation**: the epoch's loss and metrics are summed over all ranks (one small
  Allreduce per epoch), so callbacks see the whole epoch's figures on every rank and decide
  alike; validation is sharded (each rank evaluates its share of the validation set) and
  reduced. The progress bar (rank 0's) shows rank 0's running figures during the epoch. Early
  stopping is agreed: training stops when any rank's callbacks say so.
* **Rank 0 writes**: only rank 0 shows progress and runs callbacks that write files
  (``Callback.root_only``: ``ModelCheckpoint``, the CLI's run recorder, which writes
  ``metrics.jsonl``, checkpoints, plots and the model).
* **Failures**: an exception on one rank while others wait in a collective would hang the job
  (mpi4py issue 290): ``guard`` (used by ``vecnn train`` and by ``fit(distributed=True)``)
  prints the exception with its rank and calls ``MPI_Abort``, which ends every rank with a
  non-zero exit. Errors every rank meets at the same point (bad arguments, a diverged step, a
  refused agreement) are raised on every rank as ordinary exceptions.

mpi4py is an optional dependency (``pip install 'vecnn[mpi]'``, which also brings Open MPI's
``mpiexec`` into the environment); nothing in the core imports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from contextlib import contextmanager
from typing import Any

import numpy as np

from . import ops

#: environment variables MPI launchers set in every rank (Open MPI, MPICH/Hydra, PMIx, Slurm+PMI)
_LAUNCH_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")
#: how long a failing rank other than 0 waits before aborting, so that when every rank meets
#: the same error, rank 0's message is the one printed (its abort ends the others first)
ABORT_GRACE_S = 1.0

_INSTALL = "pip install 'vecnn[mpi]' (mpi4py, and Open MPI's mpiexec from PyPI)"


def launched() -> bool:
    """True when this process was started by an MPI launcher (``mpiexec``, ``srun``) as one of
    several ranks: the environment says so, without importing mpi4py."""
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS"):
        try:
            if int(os.environ.get(var, "1")) > 1:
                return True
        except ValueError:
            pass
    return "PMIX_RANK" in os.environ and "OMPI_COMM_WORLD_SIZE" not in os.environ


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ValueError(f"distributed training needs mpi4py, which is not installed ({e}); {_INSTALL}") from None
    return MPI


class Communicator:
    """The ranks of one training job: a thin wrapper of an mpi4py communicator with the few
    collective operations vecnn uses, all on buffers (never pickled objects).

    Attributes: ``rank``, ``size``, ``local_rank`` / ``local_size`` (this node's ranks, from
    ``COMM_TYPE_SHARED``), ``is_root`` (rank 0)."""

    def __init__(self, comm=None):
        MPI = _mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def __repr__(self):
        return f"Communicator(rank {self.rank} of {self.size}, {self.local_size} on this node)"

    # -- collectives ------------------------------------------------------------------------
    def allreduce_(self, buf: Any) -> Any:
        """Sum ``buf`` over all ranks, in place (``MPI.IN_PLACE``); returns ``buf``. A GPU
        array goes through host memory unless ``mpi4py`` reports a CUDA-aware MPI."""
        if isinstance(buf, np.ndarray):
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
            return buf
        backend = ops.get(buf)
        if _cuda_aware(self.MPI):
            backend.xp.cuda.get_current_stream().synchronize()  # the kernels that wrote buf
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
            return buf
        host = np.ascontiguousarray(backend.to_host(buf))
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        buf[...] = backend.asarray(host)
        return buf

    def bcast_(self, buf: Any, root: int = 0) -> Any:
        """Rank ``root``'s ``buf`` copied into every rank's ``buf``, in place."""
        if isinstance(buf, np.ndarray):
            self.comm.Bcast(buf, root=root)
            return buf
        backend = ops.get(buf)
        host = np.ascontiguousarray(backend.to_host(buf))
        self.comm.Bcast(host, root=root)
        buf[...] = backend.asarray(host)
        return buf

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank."""
        buf = np.array([1 if flag else 0], np.int32)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.MAX)
        return bool(buf[0])

    def allgather_bytes(self, data: bytes) -> list[bytes]:
        """Every rank's ``data``, in rank order (two buffer collectives: sizes, then bytes)."""
        sizes = np.zeros(self.size, np.int64)
        self.comm.Allgather(np.array([len(data)], np.int64), sizes)
        out = np.empty(int(sizes.sum()), np.uint8)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.comm.Allgatherv(np.frombuffer(data, np.uint8), [out, sizes, offsets, self.MPI.BYTE])
        return [out[o : o + s].tobytes() for o, s in zip(offsets, sizes)]

    def agree(self, fields: dict[str, Any], what: str = "distributed training") -> None:
        """Refuse, on every rank, unless every rank passes the same ``fields``: a
        ``ValueError`` naming each differing field and what rank 0 and the differing ranks
        have. One Allgather of a digest when they agree."""
        mine = {k: _text(v) for k, v in fields.items()}
        blob = json.dumps(mine, sort_keys=True).encode()
        digest = np.frombuffer(hashlib.sha256(blob).digest(), np.uint8)
        digests = np.empty((self.size, len(digest)), np.uint8)
        self.comm.Allgather(digest, digests)
        if (digests == digests[0]).all():
            return
        everyone = [json.loads(b) for b in self.allgather_bytes(blob)]
        first = everyone[0]
        diffs = []
        for key in sorted(set().union(*everyone)):
            if any(f.get(key) != first.get(key) for f in everyone[1:]):
                others = [
                    f"rank {r} has {_short(f.get(key))}"
                    for r, f in enumerate(everyone)
                    if r and f.get(key) != first.get(key)
                ]
                diffs.append(f"{key}: rank 0 has {_short(first.get(key))}, " + ", ".join(others))
        raise ValueError(f"{what}: the {self.size} ranks differ and will not start: " + "; ".join(diffs))

    def abort(self, code: int = 1) -> None:
        """End every rank of the job (``MPI_Abort``) with exit status ``code``."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        self.comm.Abort(code)

    # -- threads ---------------------------------------------------------------------------
    def threads_per_rank(self) -> int:
        """This rank's share of the node's cores: the cores this process may run on (its
        affinity, which the launcher may have narrowed) split among the node's ranks, at least 1."""
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        if cores >= (os.cpu_count() or cores):  # not bound by the launcher: share the node
            cores //= self.local_size
        return max(1, cores)


def _cuda_aware(MPI) -> bool:
    """Whether the MPI library reads GPU memory itself (Open MPI built with CUDA; mpi4py >= 4
    asks it through ``MPIX_Query_cuda_support``)."""
    query = getattr(MPI, "Query_cuda_support", None)
    try:
        return bool(query()) if query is not None else False
    except Exception:
        return False


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _short(text) -> str:
    text = "nothing" if text is None else str(text)
    return repr(text if len(text) <= 160 else text[:157] + "...")


def digest(*arrays) -> str:
    """A short digest of arrays' shapes, dtypes and bytes (what ranks compare of the data)."""
    h = hashlib.blake2b(digest_size=12)
    for a in arrays:
        a = np.ascontiguousarray(ops.get(a).to_host(a))
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(a.view(np.uint8).reshape(-1).data if a.size else b"")
    return h.hexdigest()


_world: Communicator | None = None


def world() -> Communicator:
    """The communicator of all ranks of this job (``MPI.COMM_WORLD``), created once; a
    ``ValueError`` with the install command when mpi4py is missing."""
    global _world
    if _world is None:
        _world = Communicator()
    return _world


def resolve(distributed) -> Communicator | None:
    """``fit``'s ``distributed`` argument as a communicator, or None for a one-process fit:
    False/None -> None; True -> ``world()``; "auto" -> ``world()`` when launched by an MPI
    launcher with more than one rank, else None; a ``Communicator`` as is. One rank is None."""
    if distributed is None or distributed is False:
        return None
    if distributed == "auto":
        if not launched():
            return None
        distributed = True
    if distributed is True:
        comm = world()
    elif isinstance(distributed, Communicator):
        comm = distributed
    else:
        raise ValueError(
            f"fit: expected distributed to be True, False, 'auto' or a vecnn.distributed.Communicator, "
            f"received {distributed!r}"
        )
    return comm if comm.size > 1 else None


@contextmanager
def guard(comm: Communicator | None, prefix: str = "vecnn", collective: tuple = ()):
    """Around work whose failure on one rank would leave the others waiting in a collective:
    an exception prints ``<prefix>: rank R of K: <error>`` to stderr and ends the whole job with
    ``MPI_Abort`` (exit status 1; 2 for a ``ValueError``, bad input; 130 for Ctrl-C). Rank 0
    aborts at once; other ranks first wait ``ABORT_GRACE_S``, so an error every rank meets is
    printed once, by rank 0. Exceptions of the ``collective`` types, which every rank raises
    at the same step (a diverged step: the reduced gradient is the same everywhere), pass
    through as they are. With ``comm`` None it does nothing."""
    if comm is None:
        yield
        return
    try:
        yield
    except collective:
        raise
    except BaseException as e:
        code = 130 if isinstance(e, KeyboardInterrupt) else 2 if isinstance(e, ValueError) else 1
        if not comm.is_root:
            time.sleep(ABORT_GRACE_S)
        text = " ".join(str(e).split()) or type(e).__name__
        if not isinstance(e, (ValueError, KeyboardInterrupt)):
            text = f"{type(e).__name__}: {text}"
        print(f"{prefix}: rank {comm.rank} of {comm.size}: error: {text}", file=sys.stderr, flush=True)
        comm.abort(code)
        raise  # (not reached: Abort ends the process)


def install_excepthook(comm: Communicator | None = None) -> None:
    """For scripts run under ``mpiexec``: an uncaught exception on any rank aborts the job
    (with the rank and the error on stderr) instead of leaving the other ranks waiting forever."""
    comm = comm or world()
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        print(f"rank {comm.rank} of {comm.size}: uncaught {kind.__name__}: aborting the job", file=sys.stderr)
        comm.abort(1)

    sys.excepthook = hook


class MPIDataParallel:
    """``fit``'s step strategy across ranks (the one-process twin is
    ``vecnn.parallel.DataParallel``): ``rows(m)`` is this rank's share of a global batch of
    ``m`` rows, ``step`` leaves the whole batch's mean gradient in ``model.flat_grads`` on every
    rank, ``epoch_logs`` and ``evaluate`` sum figures across ranks. As a context manager (one
    epoch) it hands each rank its own random generators (see the module's docstring)."""

    def __init__(self, model, comm: Communicator):
        self.model, self.comm = model, comm
        self.ranks = comm.size
        self._shared: list[tuple[Any, str, np.random.Generator]] = []

    # -- one epoch --------------------------------------------------------------------------
    def __enter__(self):
        holders = [
            (l, "rng") for l in _walk(self.model.layers) if isinstance(getattr(l, "rng", None), np.random.Generator)
        ]
        holders.append((self.model, "_augment_rng"))
        self._shared = []
        for obj, attr in holders:
            shared = getattr(obj, attr)
            seed = int(shared.integers(2**63))  # the same number on every rank
            self._shared.append((obj, attr, shared))
            setattr(obj, attr, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(self.comm.rank,))))
        return self

    def __exit__(self, *exc):
        for obj, attr, shared in self._shared:
            setattr(obj, attr, shared)
        self._shared = []
        if exc[0] is None:
            self.average_state()
        return False

    def rows(self, m: int) -> tuple[int, int]:
        r, k = self.comm.rank, self.comm.size
        return m * r // k, m * (r + 1) // k

    def step(self, xs, ys, m: int, ws=None, weight: float | None = None, total: float | None = None):
        """Forward and backward on this rank's rows ``xs`` of a global batch of ``m`` rows; one
        Allreduce. Returns this rank's mean loss and metrics (0 and {} for no rows). A
        non-finite loss on any rank makes the reduced gradient non-finite on every rank, so
        every rank sees the step fail alike. With sample weights, ``ws`` are this rank's rows'
        weights (None: all equal), ``weight`` their sum and ``total`` the whole batch's (every
        rank holds every weight: no communication), and the share's weighted-mean gradient
        counts ``weight / total``."""
        model = self.model
        grads = model.flat_grads
        if len(xs):
            loss = model.loss
            out = model.forward(xs, training=True)
            value = loss.forward(out, ys) if ws is None else loss.forward(out, ys, ops.get(out).asarray(ws))
            model.backward(loss.backward())
            metrics = loss.last_metrics()
            # this share's weight in the batch's mean
            grads *= len(xs) / m if weight is None or total is None else (weight / total if total > 0 else 0.0)
            if not np.isfinite(value):
                grads[:1] = np.nan
        else:
            value, metrics = 0.0, {}
            grads[...] = 0
        self.comm.allreduce_(grads)
        return value, metrics

    def epoch_logs(self, total_loss: float, seen: float, sums: dict) -> tuple[float, float, dict]:
        """The epoch's sums over all ranks (one Allreduce of a few float64s); ``seen``: rows,
        or their weights' sum."""
        keys = sorted(sums)
        buf = np.array([total_loss, seen, *(sums[k] for k in keys)], np.float64)
        self.comm.allreduce_(buf)
        return float(buf[0]), float(buf[1]), {k: float(v) for k, v in zip(keys, buf[2:])}

    def evaluate(self, X, y, batch_size: int = 1024) -> dict:
        """``model.evaluate`` over the whole of ``(X, y)``: each rank evaluates its share and the
        sums are reduced (a set smaller than the ranks is evaluated whole on every rank)."""
        n = len(X)
        if n < self.comm.size:
            return self.model.evaluate(X, y, batch_size, _checked=True)
        lo, hi = self.rows(n)
        logs = self.model.evaluate(X[lo:hi], y[lo:hi], batch_size, _checked=True)
        total, _, sums = self.epoch_logs(0.0, hi - lo, {k: v * (hi - lo) for k, v in logs.items()})
        return {k: sums[k] / n for k in logs}

    def should_stop(self, flag: bool) -> bool:
        return self.comm.any(flag)

    def average_state(self) -> None:
        """Layer state (BatchNorm's running statistics, from each rank's shares) averaged
        across ranks, so every rank holds the same model."""
        for layer in _walk(self.model.layers):
            for v in layer.state.values():
                if getattr(v.dtype, "kind", "") == "f":
                    self.comm.allreduce_(v)
                    v *= 1.0 / self.comm.size

    # -- the start of a fit ------------------------------------------------------------------
    def start(self, X, y, validation_data, fields: dict) -> None:
        """Compare what decides the run across ranks (``Communicator.agree``), then broadcast
        rank 0's parameters, layer state and optimizer state."""
        import vecnn

        model, opt = self.model, self.model.optimizer
        opt._bind(model.flat_params)
        agreed = {
            "vecnn version": vecnn.__version__,
            "architecture": model.config(),
            "loss": [type(model.loss).__name__, model.loss.config()],
            "optimizer": [type(opt).__name__, opt.config(), sorted(opt.state)],
            "optimizer steps": opt.t,
            "parameters": int(model.flat_params.size),
            "training data": digest(X, y),
            "validation data": None if validation_data is None else digest(*validation_data),
            "shuffle generator": model._shuffle_rng.bit_generator.state,
            **fields,
        }
        self.comm.agree(agreed, "fit(distributed)")
        self.comm.bcast_(model.flat_params)
        for layer in _walk(model.layers):
            for v in layer.state.values():
                self.comm.bcast_(v)
        for k in sorted(opt.state):
            self.comm.bcast_(opt.state[k])


def checked_everywhere(comm: Communicator, check):
    """``check()``'s result on every rank, or, when it raises on any rank, an exception on
    every rank: the rank's own, or a ``ValueError`` naming the rank that failed and its error.
    (Checks are local work; a rank that raised alone would leave the others waiting.)"""
    try:
        result, error = check(), None
    except Exception as e:
        result, error = None, e
    if not comm.any(error is not None):
        return result
    texts = comm.allgather_bytes(b"" if error is None else f"{type(error).__name__}: {error}".encode())
    if error is not None:
        raise error
    first = next(r for r, t in enumerate(texts) if t)
    raise ValueError(f"rank {first} of {comm.size} refused its input: {texts[first].decode(errors='replace')}")


def _walk(layers):
    for layer in layers:
        yield layer
        yield from _walk(layer.sublayers())
