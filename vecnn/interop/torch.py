"""PyTorch interop: a vecnn model as an equivalent ``torch.nn.Sequential``, and back.

Weights move unchanged where the layouts agree (conv ``(out, in, kh, kw)``, BatchNorm
statistics) and transposed where they do not (vecnn's Dense ``W`` is ``(in, out)``, torch's
``Linear.weight`` is ``(out, in)``). torch is imported inside these functions only.

>>> import vecnn as vn
>>> from vecnn.interop.torch import to_torch, from_torch
>>> net = to_torch(model)            # doctest: +SKIP
>>> model2 = from_torch(net)         # doctest: +SKIP

``from_torch`` maps a module only where vecnn computes exactly what torch computes, in eval
mode and in training mode (Dropout's masks aside: both draw them at random); every module or
argument it cannot reproduce is a ``ValueError`` naming the module (its place in the network
and its repr) and the argument. See ``from_torch`` for what maps.
"""

from __future__ import annotations

import functools
from typing import NoReturn

import numpy as np


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError(
            "vecnn.interop.torch needs PyTorch: pip install 'torch==2.13.0' (or pip install 'vecnn[torch]')"
        ) from None
    return torch


def _t(a):
    return _torch().from_numpy(np.ascontiguousarray(a).copy())


@functools.cache
def _modules():
    """torch.nn modules for the vecnn layers torch has no twin of (defined on first use)."""
    torch = _torch()
    nn = torch.nn

    class Standardize(nn.Module):
        """(x - mean) / std with fixed statistics (vecnn's Standardize layer)."""

        def __init__(self, mean, std, vecnn_config):
            super().__init__()
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)
            self.vecnn_config = vecnn_config

        def forward(self, x):
            return (x - self.mean) / self.std

    class Residual(nn.Module):
        """y = f(x) + shortcut(x), the shortcut the identity or a projection."""

        def __init__(self, f, proj=None):
            super().__init__()
            self.f = f
            self.proj = proj

        def forward(self, x):
            return self.f(x) + (x if self.proj is None else self.proj(x))

    return Standardize, Residual


def _layer_to_torch(layer):
    torch = _torch()
    nn = torch.nn
    name = type(layer).__name__
    cfg = layer.config()
    p = {k: _t(v) for k, v in layer.params.items()}
    if name == "Dense":
        m = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)
        with torch.no_grad():
            m.weight.copy_(p["W"].T)
            if layer.bias:
                m.bias.copy_(p["b"])
        return m
    if name == "Conv2D":
        m = nn.Conv2d(
            cfg["in_channels"],
            cfg["out_channels"],
            cfg["kernel_size"],
            stride=cfg["stride"],
            padding=cfg["padding"],
            dilation=cfg["dilation"],
            bias=cfg["bias"],
        )
        with torch.no_grad():
            m.weight.copy_(p["W"])
            if cfg["bias"]:
                m.bias.copy_(p["b"])
        return m
    if name in ("BatchNorm1D", "BatchNorm2D"):
        cls = nn.BatchNorm1d if name == "BatchNorm1D" else nn.BatchNorm2d
        m = cls(
            layer.num_features,
            eps=layer.eps,
            momentum=layer.momentum,
            affine=layer.affine,
            track_running_stats=layer.track_running_stats,
        )
        with torch.no_grad():
            if layer.affine:
                m.weight.copy_(p["gamma"])
                m.bias.copy_(p["beta"])
            if layer.track_running_stats:
                m.running_mean.copy_(_t(layer.state["running_mean"]))
                m.running_var.copy_(_t(layer.state["running_var"]))
            if "num_batches_tracked" in layer.state:  # momentum=None: the count weighs the next batch
                m.num_batches_tracked.fill_(int(layer.state["num_batches_tracked"][0]))
        return m
    simple = {
        "ReLU": lambda: nn.ReLU(),
        "Sigmoid": lambda: nn.Sigmoid(),
        "Tanh": lambda: nn.Tanh(),
        "LeakyReLU": lambda: nn.LeakyReLU(layer.negative_slope),
        "GELU": lambda: nn.GELU(approximate=layer.approximate),
        "Softmax": lambda: nn.Softmax(dim=-1),
        "Flatten": lambda: nn.Flatten(1),
        "Dropout": lambda: nn.Dropout(layer.rate),
        "MaxPool2D": lambda: nn.MaxPool2d(cfg["kernel_size"], cfg["stride"], cfg["padding"]),
        "AvgPool2D": lambda: nn.AvgPool2d(cfg["kernel_size"], cfg["stride"], cfg["padding"]),
        "GlobalAvgPool2D": lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)),
    }
    if name in simple:
        return simple[name]()
    Standardize, Residual = _modules()
    if name == "Standardize":
        return Standardize(_t(layer.state["mean"]), _t(layer.state["std"]), layer.config())
    if name == "Residual":
        f = nn.Sequential(*[_layer_to_torch(l) for l in layer.layers])
        return Residual(f, None if layer.projection is None else _layer_to_torch(layer.projection))
    raise ValueError(f"to_torch: no PyTorch equivalent for layer {layer!r}")


def to_torch(model):
    """An equivalent ``torch.nn.Sequential`` (float32, in eval mode) holding copies of the weights."""
    torch = _torch()
    net = torch.nn.Sequential(*[_layer_to_torch(l) for l in model.layers])
    return net.float().eval()


# -- from torch ------------------------------------------------------------------------------
# Each converter takes (module, where, rank), rank being the number of axes of the module's
# input where the modules before it fix it (None where they do not), and returns
# (layer, params, state, output rank). Only the exact torch classes map: a subclass may
# compute something else.

SUPPORTED = (
    "Linear, Conv2d, BatchNorm1d, BatchNorm2d, ReLU, LeakyReLU, Sigmoid, Tanh, GELU, Softmax, "
    "Flatten, Dropout, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1) followed by Flatten(), "
    "Identity, nested Sequential"
)


def _describe(m) -> str:
    text = " ".join(repr(m).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _refuse(where, m, what) -> NoReturn:
    raise ValueError(f"from_torch: {where} {_describe(m)}: {what}")


def _build(where, m, make):
    """``make()``, a vecnn constructor's ValueError re-raised naming the torch module."""
    try:
        return make()
    except ValueError as e:
        raise ValueError(f"from_torch: {where} {_describe(m)}: {e}") from None


def _array(where, m, name, t):
    """Tensor ``t`` (``m.<name>``) as a float32 NumPy array."""
    torch = _torch()
    if t is None:
        _refuse(where, m, f"it has no {name}")
    if t.is_meta:
        _refuse(where, m, f"its {name} is on the meta device (never materialized): there are no values to copy")
    if not t.is_floating_point():
        _refuse(where, m, f"its {name} has dtype {t.dtype}; expected real floating-point values")
    return t.detach().cpu().to(torch.float32).numpy().copy()


def _two(v) -> tuple:
    """A torch size argument (int or tuple) as a pair, as torch reads it."""
    if isinstance(v, (tuple, list)):
        return tuple(v) * 2 if len(v) == 1 else tuple(v)
    return (v, v)


def _check_hooks(where, m):
    for attr, kind in (
        ("_forward_pre_hooks", "forward pre-"),
        ("_forward_hooks", "forward "),
        ("_backward_pre_hooks", "backward pre-"),
        ("_backward_hooks", "backward "),
    ):
        n = len(getattr(m, attr, None) or {})
        if n:
            _refuse(
                where,
                m,
                f"it has {n} {kind}hook(s) registered, which may change what it computes and cannot be "
                f"carried over to vecnn; remove them first",
            )


def _linear(m, where, rank):
    from .. import layers as L

    if rank not in (None, 2):
        _refuse(
            where,
            m,
            f"its input has {rank} axes here; torch applies Linear to the last axis of any input, vecnn's "
            f"Dense takes (n, features) only: put a Flatten() before it",
        )
    bias = m.bias is not None
    layer = _build(where, m, lambda: L.Dense(m.in_features, m.out_features, bias=bias))
    values = {"W": _array(where, m, "weight", m.weight).T}
    if bias:
        values["b"] = _array(where, m, "bias", m.bias)
    return layer, values, {}, 2


def _conv2d(m, where, rank):
    from .. import layers as L

    if m.groups != 1:
        _refuse(
            where, m, f"groups={m.groups} is not supported (vecnn's Conv2D has no grouped or depthwise convolution)"
        )
    padding = m.padding
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        total = [d * (k - 1) for k, d in zip(_two(m.kernel_size), _two(m.dilation))]
        if any(t % 2 for t in total):
            _refuse(
                where,
                m,
                f"padding='same' with kernel_size={m.kernel_size} and dilation={m.dilation} is not supported: "
                f"torch then pads one row/column more at the bottom/right than at the top/left, vecnn pads "
                f"both sides equally (an odd dilated kernel size maps)",
            )
        padding = tuple(t // 2 for t in total)
    elif isinstance(padding, str):
        _refuse(where, m, f"padding={padding!r} is not supported")
    if m.padding_mode != "zeros" and any(_two(padding)):
        _refuse(
            where,
            m,
            f"padding_mode={m.padding_mode!r} is not supported with padding={m.padding!r} "
            f"(vecnn's Conv2D pads with zeros: padding_mode='zeros')",
        )
    bias = m.bias is not None
    layer = _build(
        where,
        m,
        lambda: L.Conv2D(
            m.in_channels,
            m.out_channels,
            _two(m.kernel_size),
            stride=_two(m.stride),
            padding=_two(padding),
            dilation=_two(m.dilation),
            bias=bias,
        ),
    )
    values = {"W": _array(where, m, "weight", m.weight)}
    if bias:
        values["b"] = _array(where, m, "bias", m.bias)
    return layer, values, {}, 4


def _batchnorm(m, where, rank):
    """torch's rules (``_BatchNorm.forward``) decide: the weight and bias tensors, not ``affine``,
    scale and shift; the running buffers, when present, normalize in eval mode, and training
    updates them only with ``track_running_stats``; without them every mode uses the batch's
    statistics."""
    from .. import layers as L

    if (m.weight is None) != (m.bias is None):
        _refuse(
            where,
            m,
            f"{'bias=False' if m.bias is None else 'a bias without a weight'} is not supported: vecnn's "
            f"BatchNorm trains both a scale and a shift (gamma and beta), or neither (affine=False)",
        )
    affine = m.weight is not None
    if (m.running_mean is None) != (m.running_var is None):
        missing = "running_mean" if m.running_mean is None else "running_var"
        _refuse(where, m, f"its {missing} is None but not the other running statistic (torch refuses to run it)")
    track = m.running_mean is not None
    momentum = m.momentum
    if track and not m.track_running_stats:
        # buffers kept, updates switched off: eval mode normalizes with the frozen statistics,
        # training with the batch's and leaves them as they are, which is vecnn's momentum 0
        momentum = 0.0
    state = {}
    if track:
        state["running_mean"] = _array(where, m, "running_mean", m.running_mean)
        state["running_var"] = _array(where, m, "running_var", m.running_var)
    if track and momentum is None:  # the cumulative average: the count weighs the next batch
        count = m.num_batches_tracked
        if count is None or count.numel() != 1:
            _refuse(where, m, "momentum=None needs num_batches_tracked (the count of batches seen), which it lacks")
        n = int(count.item())
        if not 0 <= n <= 2**24:
            _refuse(
                where,
                m,
                f"its num_batches_tracked={n} is not supported with momentum=None: vecnn keeps the count as "
                f"float32 state, exact from 0 to 2**24",
            )
        state["num_batches_tracked"] = np.array([n], np.float32)
    cls, out_rank = (L.BatchNorm1D, 2) if type(m) is _torch().nn.BatchNorm1d else (L.BatchNorm2D, 4)
    layer = _build(
        where,
        m,
        lambda: cls(m.num_features, eps=m.eps, momentum=momentum, affine=affine, track_running_stats=track),
    )
    values = {}
    if affine:
        values = {"gamma": _array(where, m, "weight", m.weight), "beta": _array(where, m, "bias", m.bias)}
    return layer, values, state, out_rank


def _pool_args(m, where):
    """``(kernel_size, stride, padding)`` of a torch MaxPool2d/AvgPool2d, refusing ceil_mode."""
    kernel = _two(m.kernel_size)
    stride = kernel if m.stride is None or m.stride in ((), []) else _two(m.stride)
    if m.ceil_mode and stride != (1, 1):  # with stride 1 the sizes divide: ceil == floor
        _refuse(
            where,
            m,
            f"ceil_mode=True is not supported with stride={m.stride!r}: torch then adds a partial window "
            f"at the bottom/right edge where the sizes do not divide, vecnn's pools floor the output size "
            f"(ceil_mode=False)",
        )
    return kernel, stride, _two(m.padding)


def _maxpool2d(m, where, rank):
    from .. import layers as L

    if _two(m.dilation) != (1, 1):
        _refuse(where, m, f"dilation={m.dilation!r} is not supported (vecnn's MaxPool2D has no dilation)")
    if m.return_indices:
        _refuse(where, m, "return_indices=True is not supported (vecnn's MaxPool2D returns the pooled values only)")
    kernel, stride, padding = _pool_args(m, where)
    return _build(where, m, lambda: L.MaxPool2D(kernel, stride=stride, padding=padding)), {}, {}, 4


def _avgpool2d(m, where, rank):
    from .. import layers as L

    kernel, stride, padding = _pool_args(m, where)
    if not m.count_include_pad and any(padding):
        _refuse(
            where,
            m,
            f"count_include_pad=False is not supported with padding={m.padding!r}: vecnn's AvgPool2D divides "
            f"every window by kh*kw, the zero padding included (count_include_pad=True)",
        )
    if m.divisor_override is not None and m.divisor_override != kernel[0] * kernel[1]:
        _refuse(
            where,
            m,
            f"divisor_override={m.divisor_override!r} is not supported: vecnn's AvgPool2D divides by "
            f"kh*kw = {kernel[0] * kernel[1]}",
        )
    return _build(where, m, lambda: L.AvgPool2D(kernel, stride=stride, padding=padding)), {}, {}, 4


def _activation(make):
    return lambda m, where, rank: (_build(where, m, lambda: make(m)), {}, {}, rank)


def _dropout(m, where, rank):
    from .. import layers as L

    if not 0 <= m.p < 1:
        _refuse(where, m, f"p={m.p!r} is not supported (vecnn's Dropout takes 0 <= rate < 1)")
    return L.Dropout(m.p), {}, {}, rank


def _softmax(m, where, rank):
    from .. import layers as L

    dim = m.dim
    if dim is None and rank is not None:  # torch's legacy choice (with a warning): 0 for 1 or 3 axes, else 1
        dim = 0 if rank in (1, 3) else 1
    last = dim == -1 or (rank is not None and -rank <= dim < rank and dim % rank == rank - 1)
    if not last:
        known = (
            f"the input has {rank} axes here, so dim={rank - 1} or dim=-1 maps"
            if rank is not None
            else "the number of axes of its input is not fixed by the modules before it, so only dim=-1 maps"
        )
        _refuse(where, m, f"dim={m.dim!r} is not supported: vecnn's Softmax is over the last axis, and {known}")
    return L.Softmax(), {}, {}, rank


def _flatten_ok(m, rank) -> bool:
    """Whether ``m`` (a torch Flatten) keeps the batch axis and flattens all the others."""
    if (m.start_dim, m.end_dim) == (1, -1):
        return True
    if rank is None or not all(-rank <= d < rank for d in (m.start_dim, m.end_dim)):
        return False
    return m.start_dim % rank == 1 and m.end_dim % rank == rank - 1


def _flatten(m, where, rank):
    from .. import layers as L

    if not _flatten_ok(m, rank):
        _refuse(
            where,
            m,
            f"start_dim={m.start_dim}, end_dim={m.end_dim} is not supported: vecnn's Flatten keeps the batch "
            f"axis and flattens all the others (start_dim=1, end_dim=-1)",
        )
    return L.Flatten(), {}, {}, 2


def _standardize(m, where, rank):
    from .. import layers as L

    layer = _build(where, m, lambda: L.Standardize(**m.vecnn_config))
    state = {"mean": _array(where, m, "mean", m.mean), "std": _array(where, m, "std", m.std)}
    return layer, {}, state, rank


def _residual(m, where, rank):
    from .. import layers as L

    nn = _torch().nn
    if type(m.f) is not nn.Sequential:
        _refuse(where, m, f"its f is a {type(m.f).__name__}; expected a torch.nn.Sequential")
    _check_hooks(f"{where}.f", m.f)
    parts, out_rank = _convert(_inline([(f"{where}.f.{i}", sub) for i, sub in enumerate(m.f)]), rank)
    proj = None
    if m.proj is not None:
        projs, _ = _convert(_inline([(f"{where}.proj", m.proj)]), rank)
        if len(projs) != 1:
            _refuse(where, m, f"its proj maps to {len(projs)} vecnn layers; expected one")
        proj = projs[0]
    layer = _build(where, m, lambda: L.Residual([p[0] for p in parts], projection=None if proj is None else proj[0]))
    named = [(f"f.{i}.", p) for i, p in enumerate(parts)] + ([("proj.", proj)] if proj else [])
    values = {pre + k: v for pre, p in named for k, v in p[1].items()}
    state = {pre + k: v for pre, p in named for k, v in p[2].items()}
    return layer, values, state, out_rank


@functools.cache
def _converters():
    """torch module class -> converter (the exact class only)."""
    from .. import layers as L

    nn = _torch().nn
    Standardize, Residual = _modules()
    return {
        nn.Linear: _linear,
        nn.Conv2d: _conv2d,
        nn.BatchNorm1d: _batchnorm,
        nn.BatchNorm2d: _batchnorm,
        nn.MaxPool2d: _maxpool2d,
        nn.AvgPool2d: _avgpool2d,
        nn.ReLU: _activation(lambda m: L.ReLU()),  # inplace changes nothing computed
        nn.Sigmoid: _activation(lambda m: L.Sigmoid()),
        nn.Tanh: _activation(lambda m: L.Tanh()),
        nn.LeakyReLU: _activation(lambda m: L.LeakyReLU(m.negative_slope)),
        nn.GELU: _activation(lambda m: L.GELU(m.approximate)),
        nn.Dropout: _dropout,
        nn.Softmax: _softmax,
        nn.Flatten: _flatten,
        Standardize: _standardize,
        Residual: _residual,
    }


def _inline(named):
    """``[(where, module)]`` with nested ``Sequential``s spliced in and ``Identity``s dropped."""
    nn = _torch().nn
    out = []
    for where, m in named:
        _check_hooks(where, m)
        if type(m) is nn.Sequential:
            out += _inline([(f"{where}.{i}", sub) for i, sub in enumerate(m)])
        elif type(m) is not nn.Identity:
            out.append((where, m))
    return out


def _convert(items, rank):
    """``(layer, params, state, where, module)`` for each ``(where, module)``, and the output rank."""
    nn = _torch().nn
    converters = _converters()
    built = []
    i = 0
    while i < len(items):
        where, m = items[i]
        if type(m) is nn.AdaptiveAvgPool2d:
            _global_pool(items, i)
            from .. import layers as L

            built.append((L.GlobalAvgPool2D(), {}, {}, where, m))
            rank, i = 2, i + 2
            continue
        convert = converters.get(type(m))
        if convert is None:
            base = next((c for c in type(m).__mro__[1:] if c in converters), None)
            if base is not None:
                _refuse(
                    where,
                    m,
                    f"{type(m).__name__} is a subclass of {base.__module__}.{base.__name__}; only "
                    f"{base.__name__} itself maps (a subclass may compute something else)",
                )
            raise ValueError(
                f"from_torch: {where} {type(m).__name__} has no vecnn equivalent: {_describe(m)} "
                f"(supported: {SUPPORTED})"
            )
        layer, values, state, rank = convert(m, where, rank)
        built.append((layer, values, state, where, m))
        i += 1
    return built, rank


def _global_pool(items, i):
    """Check that ``items[i]`` (an AdaptiveAvgPool2d) and the next module are GlobalAvgPool2D."""
    nn = _torch().nn
    where, m = items[i]
    if m.output_size not in (1, (1, 1), [1, 1]):
        _refuse(
            where,
            m,
            f"output_size={m.output_size!r} is not supported: only AdaptiveAvgPool2d(1) directly followed "
            f"by Flatten() maps (to vecnn's GlobalAvgPool2D)",
        )
    nxt = items[i + 1][1] if i + 1 < len(items) else None
    if type(nxt) is not nn.Flatten or not _flatten_ok(nxt, 4):
        after = "it is the last module" if nxt is None else f"{items[i + 1][0]} is {_describe(nxt)}"
        _refuse(
            where,
            m,
            f"AdaptiveAvgPool2d(1) maps only when Flatten() (start_dim=1, end_dim=-1) follows it directly: "
            f"the two together are vecnn's GlobalAvgPool2D, and vecnn has no layer that keeps the "
            f"(n, C, 1, 1) shape; here {after}",
        )


def _check_shared(net) -> None:
    """Refuse a parameter or buffer held by two places of ``net`` (a module used twice, tied weights):
    vecnn layers own their arrays, so training would update the copies separately."""
    seen: dict[int, str] = {}
    tensors = [*net.named_parameters(remove_duplicate=False), *net.named_buffers(remove_duplicate=False)]
    for name, t in tensors:
        first = seen.setdefault(id(t), name)
        if first != name:
            path, attr = name.rsplit(".", 1)
            first_path, first_attr = first.rsplit(".", 1)
            _refuse(
                f"module {path}",
                net.get_submodule(path),
                f"its {attr} is the same tensor as module {first_path}'s {first_attr} (a module used twice, "
                f"or tied weights); vecnn layers each own their weights, so training would update them "
                f"separately: give each place its own module",
            )


def from_torch(net, seed=0):
    """A vecnn ``Sequential`` computing exactly what the ``torch.nn.Sequential`` ``net`` computes.

    Weights and BatchNorm statistics are copied (as float32). What maps, each only as the exact
    torch class (a subclass is refused):

    - ``Linear`` (on ``(n, features)`` input), ``Conv2d`` (``groups=1``; zero padding, or any
      ``padding_mode`` without padding; ``padding='same'`` with an odd dilated kernel size);
    - ``BatchNorm1d`` / ``BatchNorm2d``: ``affine`` either way (a weight and a bias, or neither;
      ``bias=False`` alone is refused), ``track_running_stats`` either way, ``momentum`` a number
      from 0 to 1 or None (the cumulative average; ``num_batches_tracked`` comes along). Running
      buffers kept with ``track_running_stats`` switched off afterwards (torch then normalizes
      with them in eval mode and never updates them) become vecnn's ``momentum=0``;
    - ``MaxPool2d`` (``dilation=1``, ``return_indices=False``), ``AvgPool2d``
      (``count_include_pad=False`` only without padding, ``divisor_override`` only ``kh*kw``),
      both with ``ceil_mode=False`` or stride 1;
    - ``ReLU``, ``LeakyReLU``, ``Sigmoid``, ``Tanh``, ``GELU``, ``Dropout`` (``p < 1``),
      ``Softmax`` over the last axis, ``Flatten`` of every axis but the batch axis,
      ``AdaptiveAvgPool2d(1)`` directly followed by ``Flatten()`` (``GlobalAvgPool2D``);
    - nested ``Sequential``s (spliced in), ``Identity`` (dropped), and what ``to_torch`` writes.

    Anything else (a module with hooks, a weight shared by two places among them) is a
    ``ValueError`` naming the module (its place, e.g. ``module 3`` or ``module 2.1``, and its
    repr) and what is not supported. Every vecnn parameter trains: a torch parameter with
    ``requires_grad=False`` comes over trainable.
    """
    from ..model import Sequential

    torch = _torch()
    if not isinstance(net, torch.nn.Sequential):
        raise ValueError(f"from_torch: expected a torch.nn.Sequential, received {type(net).__name__}")
    from torch.nn.modules import module as tm

    hooks = [n for n in ("forward_pre", "forward", "backward_pre", "backward") if getattr(tm, f"_global_{n}_hooks", {})]
    if hooks:
        raise ValueError(
            f"from_torch: global module hooks are registered ({', '.join(hooks)}), which may change what "
            f"every module computes and cannot be carried over to vecnn; remove them first"
        )
    _check_hooks("the network", net)
    _check_shared(net)
    built, _ = _convert(_inline([(f"module {i}", m) for i, m in enumerate(net)]), None)
    if not built:
        raise ValueError(f"from_torch: {_describe(net)} holds no module that computes anything (only Identity)")
    model = Sequential([b[0] for b in built], seed=seed)
    for layer, values, state, where, m in built:
        for table, arrays in ((layer.params, values), (layer.state, state)):
            for k, v in arrays.items():
                if table[k].shape != v.shape:
                    _refuse(where, m, f"its {k} has shape {v.shape}; {layer!r} expects {table[k].shape}")
                table[k][...] = v
    return model
