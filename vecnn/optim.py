"""Optimizers working on one flat parameter buffer and one flat gradient buffer.

Sorted in order of increasing complexity. The base ``Optimizer`` owns what every optimizer
shares: the step count, the learning-rate schedule, global-norm gradient clipping and the
state arrays; each subclass is one update rule written as a few whole-buffer operations
(``out=`` arithmetic, no per-layer loop, no per-step allocation). The rules follow PyTorch's
``torch.optim`` exactly, so trajectories can be compared step for step.
"""
from __future__ import annotations

import math

import numpy as np

from . import kernels
from . import pool as _pool


# -- learning-rate schedules: lr(step) from the optimizer's base lr; steps count batches ------
class Schedule:
    def __call__(self, step: int, base_lr: float) -> float:  # step counts from 1
        raise NotImplementedError

    def config(self) -> dict:
        return {"name": type(self).__name__, **vars(self)}


class StepLR(Schedule):
    """Multiply the lr by ``gamma`` every ``step_size`` steps."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        if step_size < 1:
            raise ValueError(f"StepLR: expected step_size >= 1, received {step_size!r}")
        self.step_size, self.gamma = int(step_size), float(gamma)

    def __call__(self, step, base_lr):
        return base_lr * self.gamma ** ((step - 1) // self.step_size)


class CosineLR(Schedule):
    """Cosine decay from the base lr to ``min_lr`` over ``total_steps``, then constant."""

    def __init__(self, total_steps: int, min_lr: float = 0.0):
        if total_steps < 1:
            raise ValueError(f"CosineLR: expected total_steps >= 1, received {total_steps!r}")
        self.total_steps, self.min_lr = int(total_steps), float(min_lr)

    def __call__(self, step, base_lr):
        t = min(step - 1, self.total_steps) / self.total_steps
        return self.min_lr + 0.5 * (base_lr - self.min_lr) * (1 + math.cos(math.pi * t))


class WarmupLR(Schedule):
    """Linear warm-up from ``base_lr / warmup_steps`` to the base lr, then ``after`` (if any)
    counted from the end of the warm-up."""

    def __init__(self, warmup_steps: int, after: Schedule | None = None):
        if warmup_steps < 1:
            raise ValueError(f"WarmupLR: expected warmup_steps >= 1, received {warmup_steps!r}")
        self.warmup_steps, self.after = int(warmup_steps), after

    def __call__(self, step, base_lr):
        if step <= self.warmup_steps:
            return base_lr * step / self.warmup_steps
        return self.after(step - self.warmup_steps, base_lr) if self.after else base_lr

    def config(self):
        return {"name": "WarmupLR", "warmup_steps": self.warmup_steps,
                "after": self.after.config() if self.after else None}


SCHEDULES = {c.__name__: c for c in (StepLR, CosineLR, WarmupLR)}


def schedule_from_config(cfg: dict | None) -> Schedule | None:
    if cfg is None:
        return None
    cfg = dict(cfg)
    cls = SCHEDULES[cfg.pop("name")]
    if cls is WarmupLR:
        return WarmupLR(cfg["warmup_steps"], schedule_from_config(cfg["after"]))
    return cls(**cfg)


# -- the optimizers -------------------------------------------------------------------------
class Optimizer:
    """Base optimizer: ``step(params, grads)`` updates the flat ``params`` buffer in place.

    The base owns what every rule shares: the step count, the learning-rate schedule,
    global-norm clipping, the state buffers, and divergence safety: ``step`` keeps the
    previous parameters and reports whether the new ones are all finite, and ``undo`` puts
    the previous ones back. Each subclass is one update rule, written twice: as readable
    NumPy whole-buffer operations (``update``) and, when numba is installed, as one fused
    pass over memory (``fused``, in ``vecnn.kernels``).

    Parameters
    ----------
    lr : float
        Base learning rate.
    weight_decay : float
        L2 penalty added to the gradient (decoupled in AdamW).
    clip_norm : float or None
        Rescale the gradient so its global L2 norm is at most ``clip_norm``.
    schedule : Schedule or None
        ``lr(step)`` as a function of the step count.
    """

    #: names of the per-parameter state buffers this rule keeps
    slots: tuple[str, ...] = ()

    def __init__(self, lr=1e-3, weight_decay=0.0, clip_norm=None, schedule=None):
        name = type(self).__name__
        if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"{name}: expected a positive, finite lr, received lr={lr!r}")
        if not weight_decay >= 0:
            raise ValueError(f"{name}: expected weight_decay >= 0, received {weight_decay!r}")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"{name}: expected clip_norm > 0 or None, received {clip_norm!r}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.clip_norm = clip_norm
        self.schedule = schedule
        self.t = 0
        self.state: dict[str, np.ndarray] = {}
        self._previous = None        # the parameters before the last step, for undo
        self._scratch = None

    def _bind(self, params):
        """Allocate state for a buffer like ``params`` (once; kept across ``fit`` calls), and
        make loaded state match it: one C-contiguous buffer of ``params``'s shape and dtype per
        slot (a slot of another shape, or missing, starts the rule afresh)."""
        prev = self._previous
        if prev is None or prev.shape != params.shape or prev.dtype != params.dtype:
            self._previous = np.empty_like(params)
            self._scratch = np.empty_like(params)
        state = self.state
        if state.keys() != set(self.slots) or any(v.shape != params.shape for v in state.values()):
            self.state = {k: np.zeros_like(params) for k in self.slots}
            self.t = 0
        elif any(v.dtype != params.dtype or not v.flags.c_contiguous for v in state.values()):
            self.state = {k: np.ascontiguousarray(v, params.dtype) for k, v in state.items()}

    def current_lr(self, step=None) -> float:
        step = self.t if step is None else step
        return self.schedule(max(step, 1), self.lr) if self.schedule else self.lr

    def step(self, params, grads) -> bool:
        """One update of the flat ``params`` from the flat ``grads`` (which may be rescaled in
        place). Returns True when every updated parameter is finite; otherwise ``undo`` restores
        the parameters from before the step."""
        self._bind(params)
        self.t += 1
        if self.clip_norm is not None:
            norm = math.sqrt(float(np.dot(grads, grads)))
            if norm > self.clip_norm:
                grads *= self.clip_norm / (norm + 1e-6)
        lr = self.current_lr()
        k = kernels.get() if params.dtype == np.float32 else None
        if k is not None:
            return self.fused(k, params, grads, lr, _pool.get()) == 0
        np.copyto(self._previous, params)
        with np.errstate(over="ignore", invalid="ignore"):   # overflow is reported by the return value
            self.update(params, grads, lr)
            if math.isfinite(float(np.dot(params, params))):
                return True
        return bool(np.isfinite(params).all())      # the dot product overflowed on finite values

    def undo(self, params):
        """Put back the parameters from before the last step and reset the rule's state (which
        the failed step may have filled with non-finite values)."""
        np.copyto(params, self._previous)
        for v in self.state.values():
            v[...] = 0
        self.t = 0

    def update(self, p, g, lr):
        """The rule in NumPy whole-buffer operations."""
        raise NotImplementedError

    def fused(self, k, p, g, lr, pool=None) -> float:
        """The rule as one compiled pass (``vecnn.kernels``; split across BLAS's threads by
        ``pool`` when given, see ``vecnn.pool``); returns its finiteness check."""
        call = self._kernel_call(p, g, lr)
        if call is None:                  # a rule without a compiled kernel: NumPy, then a check
            self.update(p, g, lr)
            return 0.0 if np.isfinite(p).all() else math.nan
        name, state, scalars = call
        # the pool's shares read raw memory: every buffer 1-D, C-contiguous float32 (state and
        # previous are, by _bind; a gradient passed to step by hand may not be)
        if (pool is not None and p.ndim == 1 and p.flags.c_contiguous and g.dtype == np.float32
                and g.shape == p.shape and g.flags.c_contiguous):
            return pool.optimizer(name, p, g, state[0], state[-1], self._previous, *scalars)
        return getattr(k, name)(p, g, *state, self._previous, *scalars)

    def _kernel_call(self, p, g, lr):
        """``(kernel name, state buffers, float32 scalars)`` of the rule's compiled pass
        ``kernel(p, g, *state, previous, *scalars)``, or None."""
        return None

    # -- (de)serialization for checkpoints ------------------------------------------------
    def config(self) -> dict:
        cfg = {"lr": self.lr, "weight_decay": self.weight_decay, "clip_norm": self.clip_norm,
               "schedule": self.schedule.config() if self.schedule else None}
        cfg.update(self._rule_config())
        return cfg

    def _rule_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, cfg):
        cfg = dict(cfg)
        cfg["schedule"] = schedule_from_config(cfg.get("schedule"))
        return cls(**cfg)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"t": np.array([self.t], np.int64), **self.state}

    def load_state_dict(self, arrays: dict[str, np.ndarray]):
        """Restore what ``state_dict`` returned. An optimizer that has not stepped yet (``t``
        0, e.g. saved in a checkpoint before the first epoch) has no state buffers: they are
        allocated at its first step, exactly as for a fresh optimizer. Raises ``ValueError``
        naming what is missing or malformed otherwise."""
        name = type(self).__name__
        t = np.asarray(arrays.get("t", ()))
        if t.size != 1 or t.dtype.kind not in "iu" or int(t.reshape(-1)[0]) < 0:
            raise ValueError(f"{name}: optimizer state needs a step count 't' (one non-negative integer), "
                             f"received {t.tolist() if t.size <= 4 else f'an array of shape {t.shape}'}")
        t = int(t.reshape(-1)[0])
        present = [k for k in self.slots if k in arrays]
        if t == 0 and not present:
            self.t, self.state = 0, {}                       # not stepped yet: _bind allocates
            return
        missing = [k for k in self.slots if k not in arrays]
        if missing:
            raise ValueError(f"{name}: optimizer state after {t} step(s) lacks {', '.join(map(repr, missing))}")
        shapes = {np.shape(arrays[k]) for k in self.slots}
        if len(shapes) > 1 or any(len(s) != 1 for s in shapes):
            raise ValueError(f"{name}: optimizer state buffers {list(self.slots)} must be 1-D and of one "
                             f"size, received shapes {[np.shape(arrays[k]) for k in self.slots]}")
        for k in self.slots:
            a = np.asarray(arrays[k])
            if a.dtype.kind != "f" or not np.isfinite(a).all():
                raise ValueError(f"{name}: optimizer state {k!r} must hold finite floats")
        self.t = t
        self.state = {k: np.array(arrays[k]) for k in self.slots}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"


_f32 = np.float32


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``."""

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, clip_norm=None, schedule=None):
        super().__init__(lr, weight_decay, clip_norm, schedule)
        if not 0 <= momentum < 1:
            raise ValueError(f"SGD: expected 0 <= momentum < 1, received momentum={momentum!r}")
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.slots = ("velocity",) if momentum else ()

    def update(self, p, g, lr):
        if self.weight_decay:
            g += self.weight_decay * p                     # L2 penalty: g = g + wd p
        if self.momentum:
            v = self.state["velocity"]
            if self.t == 1:
                v[...] = g                                 # torch starts the buffer at g
            else:
                v *= self.momentum
                v += g                                     # v = mu v + g
            if self.nesterov:
                d = np.multiply(v, self.momentum, out=self._scratch)
                d += g                                     # g + mu v
                g = d
            else:
                g = v
        np.multiply(g, lr, out=self._scratch)
        p -= self._scratch

    def _kernel_call(self, p, g, lr):
        buf = self.state["velocity"] if self.momentum else self._scratch
        return "sgd", (buf,), (_f32(lr), _f32(self.momentum), _f32(self.weight_decay), self.nesterov, self.t == 1)

    def _rule_config(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov}


class RMSProp(Optimizer):
    """RMSProp: divide by a running root-mean-square of the gradient (``torch.optim.RMSprop``)."""

    slots = ("square_avg",)

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, clip_norm=None, schedule=None):
        super().__init__(lr, weight_decay, clip_norm, schedule)
        self.alpha, self.eps = float(alpha), float(eps)

    def update(self, p, g, lr):
        if self.weight_decay:
            g += self.weight_decay * p
        s, d = self.state["square_avg"], self._scratch
        s *= self.alpha
        np.multiply(g, g, out=d)
        d *= 1 - self.alpha
        s += d                                             # s = alpha s + (1-alpha) g^2
        np.sqrt(s, out=d)
        d += self.eps
        np.divide(g, d, out=d)
        d *= lr
        p -= d                                             # p -= lr g / (sqrt(s) + eps)

    def _kernel_call(self, p, g, lr):
        return "rmsprop", (self.state["square_avg"],), (_f32(lr), _f32(self.alpha), _f32(1 - self.alpha),
                                                       _f32(self.eps), _f32(self.weight_decay))

    def _rule_config(self):
        return {"alpha": self.alpha, "eps": self.eps}


class Adam(Optimizer):
    """Adam with bias correction (``torch.optim.Adam``); ``weight_decay`` is an L2 penalty.

    ``AdamW`` is the same rule with the decay decoupled from the gradient.
    """

    slots = ("m", "v")
    decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, clip_norm=None, schedule=None):
        super().__init__(lr, weight_decay, clip_norm, schedule)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"{type(self).__name__}: expected betas in [0, 1), received {betas!r}")
        self.betas, self.eps = (float(b1), float(b2)), float(eps)

    def update(self, p, g, lr):
        b1, b2 = self.betas
        m, v, d = self.state["m"], self.state["v"], self._scratch
        bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t      # bias corrections
        if self.weight_decay:
            if self.decoupled:
                p *= 1 - lr * self.weight_decay            # AdamW: shrink the weights directly
            else:
                g += self.weight_decay * p
        m *= b1
        np.multiply(g, 1 - b1, out=d)
        m += d                                             # m = b1 m + (1-b1) g
        v *= b2
        np.multiply(g, g, out=d)
        d *= 1 - b2
        v += d                                             # v = b2 v + (1-b2) g^2
        np.sqrt(v, out=d)
        d *= 1 / math.sqrt(bc2)
        d += self.eps                                      # sqrt(v_hat) + eps
        np.divide(m, d, out=d)
        d *= lr / bc1
        p -= d                                             # p -= lr m_hat / (sqrt(v_hat) + eps)

    def _kernel_call(self, p, g, lr):
        b1, b2 = self.betas
        bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        wd = self.weight_decay
        return "adam", (self.state["m"], self.state["v"]), (
            _f32(b1), _f32(1 - b1), _f32(b2), _f32(1 - b2), _f32(self.eps), _f32(lr / bc1),
            _f32(1 / math.sqrt(bc2)), _f32(0 if self.decoupled else wd), _f32(1 - lr * wd if self.decoupled else 1))

    def _rule_config(self):
        return {"betas": list(self.betas), "eps": self.eps}

    @classmethod
    def from_config(cls, cfg):
        cfg = dict(cfg)
        cfg["betas"] = tuple(cfg["betas"])
        return super().from_config.__func__(cls, cfg)


class AdamW(Adam):
    """Adam with decoupled weight decay (``torch.optim.AdamW``; default weight_decay 0.01)."""

    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, clip_norm=None, schedule=None):
        super().__init__(lr, betas, eps, weight_decay, clip_norm, schedule)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSProp}


def get(optimizer, **kwargs) -> Optimizer:
    """An optimizer from a name (``"adam"``, ``"sgd"``, ``"adamw"``, ``"rmsprop"``) or instance."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS:
        return OPTIMIZERS[optimizer.lower()](**kwargs)
    raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)} or an Optimizer, received {optimizer!r}")
