"""Optimizers working on one flat parameter buffer and one flat gradient buffer.

Sorted in order of increasing complexity. The base ``Optimizer`` owns what every optimizer
shares: the step count, the learning-rate schedule, global-norm gradient clipping and the
state arrays; each subclass is one update rule written as a few whole-buffer operations
(``out=`` arithmetic, no per-layer loop, no per-step allocation). The rules follow PyTorch's
``torch.optim`` exactly, so trajectories can be compared step for step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import ops


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
        return {
            "name": "WarmupLR",
            "warmup_steps": self.warmup_steps,
            "after": self.after.config() if self.after else None,
        }


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
    the previous ones back. Each subclass names its update rule and its scalars (``_rule``);
    the backend of the parameters runs it (``vecnn.ops``: readable whole-buffer operations in
    the NumPy backend, ``NumPyBackend._adam`` and so on; one fused pass over memory in the
    compiled and GPU backends).

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

    Attributes
    ----------
    lr_scale : float
        A multiplier on top of the (scheduled) rate, 1.0 unless a callback changed it
        (``ReduceLROnPlateau``, ``LearningRateScheduler``): the rate of step ``t`` is
        ``lr_scale * schedule(t, lr)`` (``lr_scale * lr`` without a schedule). Callbacks change
        this multiplier, never ``lr``, so the configured base rate and the schedule stay as
        they were given; it is saved with the optimizer's config when it is not 1.
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
        self.lr_scale = 1.0
        self.t = 0
        self.state: dict[str, np.ndarray] = {}
        self._previous = None  # the parameters before the last step, for undo
        self._scratch = None

    def _bind(self, params):
        """Allocate state for a buffer like ``params`` (once; kept across ``fit`` calls), and
        make loaded state match it: one C-contiguous buffer of ``params``'s shape, dtype and
        device per slot (a slot of another shape, or missing, starts the rule afresh)."""
        xp = ops.get(params).xp
        prev = self._previous
        if prev is None or prev.shape != params.shape or prev.dtype != params.dtype or type(prev) is not type(params):
            self._previous = xp.empty_like(params)
            self._scratch = xp.empty_like(params)
        state = self.state
        if state.keys() != set(self.slots) or any(v.shape != params.shape for v in state.values()):
            self.state = {k: xp.zeros_like(params) for k in self.slots}
            self.t = 0
        elif any(
            v.dtype != params.dtype or not v.flags.c_contiguous or type(v) is not type(params) for v in state.values()
        ):
            backend = ops.get(params)
            self.state = {k: xp.ascontiguousarray(backend.asarray(v), params.dtype) for k, v in state.items()}

    def current_lr(self, step: int | None = None) -> float:
        """The rate of step ``step`` (default: the last one taken, or the first before any):
        ``lr_scale`` times the schedule's rate (or times ``lr`` without a schedule)."""
        step = self.t if step is None else step
        rate = self.schedule(max(step, 1), self.lr) if self.schedule else self.lr
        return rate * self.lr_scale

    def step(self, params: Any, grads: Any) -> bool:
        """One update of the flat ``params`` from the flat ``grads`` (which may be rescaled in
        place). Returns True when every updated parameter is finite; otherwise ``undo`` restores
        the parameters from before the step."""
        backend = ops.get(params)
        self._bind(params)
        self.t += 1
        if self.clip_norm is not None:
            norm = math.sqrt(float(backend.xp.dot(grads, grads)))
            if norm > self.clip_norm:
                grads *= self.clip_norm / (norm + 1e-6)
        rule, state, scalars = self._rule(self.current_lr())
        # one pass (compiled; on the GPU, one kernel), keeping the previous parameters for undo
        return backend.optimizer_update(rule, params, grads, state, self._previous, scalars)

    def undo(self, params: Any) -> None:
        """Put back the parameters from before the last step and reset the rule's state (which
        the failed step may have filled with non-finite values)."""
        params[...] = self._previous
        for v in self.state.values():
            v[...] = 0
        self.t = 0

    def _rule(self, lr):
        """``(rule name, state buffers, float32 scalars)``: the backend's ``optimizer_update``
        of this rule (``vecnn.ops``: written as whole-buffer operations in the NumPy backend,
        one compiled pass in the others)."""
        raise NotImplementedError

    # -- (de)serialization for checkpoints ------------------------------------------------
    def config(self) -> dict:
        cfg = {
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "clip_norm": self.clip_norm,
            "schedule": self.schedule.config() if self.schedule else None,
        }
        cfg.update(self._rule_config())
        if self.lr_scale != 1.0:  # only when a callback changed it: files stay as they were
            cfg["lr_scale"] = self.lr_scale
        return cfg

    def _rule_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, cfg):
        cfg = dict(cfg)
        cfg["schedule"] = schedule_from_config(cfg.get("schedule"))
        scale = cfg.pop("lr_scale", 1.0)
        if isinstance(scale, bool) or not (isinstance(scale, (int, float)) and scale >= 0 and math.isfinite(scale)):
            raise ValueError(f"{cls.__name__}: expected a finite lr_scale >= 0, received {scale!r}")
        opt = cls(**cfg)
        opt.lr_scale = float(scale)
        return opt

    def state_dict(self) -> dict[str, Any]:
        return {"t": ops.cpu().asarray([self.t], np.int64), **self.state}

    def load_state_dict(self, arrays: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned. An optimizer that has not stepped yet (``t``
        0, e.g. saved in a checkpoint before the first epoch) has no state buffers: they are
        allocated at its first step, exactly as for a fresh optimizer. Raises ``ValueError``
        naming what is missing or malformed otherwise."""
        name = type(self).__name__
        host = ops.get(*arrays.values()) if arrays else ops.cpu()
        t = host.asarray(arrays.get("t", ()))
        if t.size != 1 or t.dtype.kind not in "iu" or int(t.reshape(-1)[0]) < 0:
            raise ValueError(
                f"{name}: optimizer state needs a step count 't' (one non-negative integer), "
                f"received {t.tolist() if t.size <= 4 else f'an array of shape {t.shape}'}"
            )
        t = int(t.reshape(-1)[0])
        present = [k for k in self.slots if k in arrays]
        if t == 0 and not present:
            self.t, self.state = 0, {}  # not stepped yet: _bind allocates
            return
        missing = [k for k in self.slots if k not in arrays]
        if missing:
            raise ValueError(f"{name}: optimizer state after {t} step(s) lacks {', '.join(map(repr, missing))}")
        shapes = {tuple(host.asarray(arrays[k]).shape) for k in self.slots}
        if len(shapes) > 1 or any(len(s) != 1 for s in shapes):
            raise ValueError(
                f"{name}: optimizer state buffers {list(self.slots)} must be 1-D and of one "
                f"size, received shapes {[tuple(host.asarray(arrays[k]).shape) for k in self.slots]}"
            )
        for k in self.slots:
            a = host.asarray(arrays[k])
            if a.dtype.kind != "f" or not host.all_finite(a):
                raise ValueError(f"{name}: optimizer state {k!r} must hold finite floats")
        self.t = t
        self.state = {k: host.asarray(arrays[k]).copy() for k in self.slots}

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

    def _rule(self, lr):
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

    def _rule(self, lr):
        return (
            "rmsprop",
            (self.state["square_avg"],),
            (_f32(lr), _f32(self.alpha), _f32(1 - self.alpha), _f32(self.eps), _f32(self.weight_decay)),
        )

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

    def _rule(self, lr):
        b1, b2 = self.betas
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        wd = self.weight_decay
        return (
            "adam",
            (self.state["m"], self.state["v"]),
            (
                _f32(b1),
                _f32(1 - b1),
                _f32(b2),
                _f32(1 - b2),
                _f32(self.eps),
                _f32(lr / bc1),
                _f32(1 / math.sqrt(bc2)),
                _f32(0 if self.decoupled else wd),
                _f32(1 - lr * wd if self.decoupled else 1),
            ),
        )

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
