"""PyTorch interop: a vecnn model as an equivalent ``torch.nn.Sequential``, and back.

Weights move unchanged where the layouts agree (conv ``(out, in, kh, kw)``, BatchNorm
statistics) and transposed where they do not (vecnn's Dense ``W`` is ``(in, out)``, torch's
``Linear.weight`` is ``(out, in)``). torch is imported inside these functions only.

>>> import vecnn as vn
>>> from vecnn.interop.torch import to_torch, from_torch
>>> net = to_torch(model)            # doctest: +SKIP
>>> model2 = from_torch(net)         # doctest: +SKIP
"""

from __future__ import annotations

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
        m = cls(layer.num_features, eps=layer.eps, momentum=layer.momentum)
        with torch.no_grad():
            m.weight.copy_(p["gamma"])
            m.bias.copy_(p["beta"])
            m.running_mean.copy_(_t(layer.state["running_mean"]))
            m.running_var.copy_(_t(layer.state["running_var"]))
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


def _layer_from_torch(m, where):
    from .. import layers as L

    torch = _torch()
    nn = torch.nn
    a = lambda t: t.detach().cpu().numpy().astype(np.float32)
    if isinstance(m, nn.Linear):
        layer = L.Dense(m.in_features, m.out_features, bias=m.bias is not None)
        values = {"W": a(m.weight).T, **({"b": a(m.bias)} if m.bias is not None else {})}
        return layer, values, {}
    if isinstance(m, nn.Conv2d):
        if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise ValueError(f"from_torch: {where} {m}: only groups=1, zero padding given as numbers is supported")
        layer = L.Conv2D(
            m.in_channels,
            m.out_channels,
            m.kernel_size,
            stride=m.stride,
            padding=m.padding,
            dilation=m.dilation,
            bias=m.bias is not None,
        )
        return layer, {"W": a(m.weight), **({"b": a(m.bias)} if m.bias is not None else {})}, {}
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        cls = L.BatchNorm1D if isinstance(m, nn.BatchNorm1d) else L.BatchNorm2D
        layer = cls(m.num_features, eps=m.eps, momentum=m.momentum if m.momentum is not None else 0.1)
        return (
            layer,
            {"gamma": a(m.weight), "beta": a(m.bias)},
            {"running_mean": a(m.running_mean), "running_var": a(m.running_var)},
        )
    pool_args = lambda p: dict(stride=p.stride, padding=p.padding)
    simple = [
        (nn.ReLU, lambda: L.ReLU()),
        (nn.Sigmoid, lambda: L.Sigmoid()),
        (nn.Tanh, lambda: L.Tanh()),
        (nn.LeakyReLU, lambda: L.LeakyReLU(m.negative_slope)),
        (nn.GELU, lambda: L.GELU(m.approximate)),
        (nn.Dropout, lambda: L.Dropout(m.p)),
        (nn.MaxPool2d, lambda: L.MaxPool2D(m.kernel_size, **pool_args(m))),
        (nn.AvgPool2d, lambda: L.AvgPool2D(m.kernel_size, **pool_args(m))),
    ]
    for cls, make in simple:
        if isinstance(m, cls):
            return make(), {}, {}
    if isinstance(m, nn.Softmax) and m.dim in (-1, 1):
        return L.Softmax(), {}, {}
    if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
        return L.Flatten(), {}, {}
    if (
        isinstance(m, nn.Sequential)
        and len(m) == 2
        and isinstance(m[0], nn.AdaptiveAvgPool2d)
        and m[0].output_size in (1, (1, 1))
        and isinstance(m[1], nn.Flatten)
    ):
        return L.GlobalAvgPool2D(), {}, {}
    if type(m).__name__ == "Standardize" and hasattr(m, "vecnn_config"):  # made by to_torch
        return L.Standardize(**m.vecnn_config), {}, {"mean": a(m.mean), "std": a(m.std)}
    if type(m).__name__ == "Residual" and isinstance(getattr(m, "f", None), nn.Sequential):
        parts = [_layer_from_torch(sub, f"{where}.f.{i}") for i, sub in enumerate(m.f)]
        proj = None if m.proj is None else _layer_from_torch(m.proj, f"{where}.proj")
        layer = L.Residual([p[0] for p in parts], projection=None if proj is None else proj[0])
        named = [(f"f.{i}.", p) for i, p in enumerate(parts)] + ([("proj.", proj)] if proj else [])
        return (
            layer,
            {pre + k: v for pre, p in named for k, v in p[1].items()},
            {pre + k: v for pre, p in named for k, v in p[2].items()},
        )
    raise ValueError(
        f"from_torch: {where} {type(m).__name__} has no vecnn equivalent (supported: Linear, Conv2d, "
        f"BatchNorm1d/2d, ReLU, LeakyReLU, Sigmoid, Tanh, GELU, Softmax, Flatten, Dropout, "
        f"MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1)+Flatten)"
    )


def from_torch(net, seed=0):
    """A vecnn ``Sequential`` equivalent to the ``torch.nn.Sequential`` ``net`` (weights copied)."""
    from ..model import Sequential

    torch = _torch()
    if not isinstance(net, torch.nn.Sequential):
        raise ValueError(f"from_torch: expected a torch.nn.Sequential, received {type(net).__name__}")
    built = [_layer_from_torch(m, f"module {i}") for i, m in enumerate(net)]
    model = Sequential([layer for layer, _, _ in built], seed=seed)
    for layer, values, state in built:
        for k, v in values.items():
            layer.params[k][...] = v
        for k, v in state.items():
            layer.state[k][...] = v
    return model
