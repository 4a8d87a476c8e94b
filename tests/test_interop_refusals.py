"""from_torch refuses every module or argument it cannot reproduce exactly, with a ValueError
naming the module (its place in the network and its repr) and the argument."""

import numpy as np
import pytest

from vecnn.interop.torch import from_torch

torch = pytest.importorskip("torch")
nn = torch.nn


class MyReLU(nn.ReLU):
    def forward(self, x):
        return super().forward(x) * 2


class Residual(nn.Module):  # named like to_torch's block, but not it
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.ReLU())
        self.proj = None

    def forward(self, x):
        return 2 * self.f(x) + x


def hooked():
    m = nn.ReLU()
    m.register_forward_hook(lambda mod, args, out: out * 2)
    return m


def parametrized():
    m = nn.Linear(4, 4)
    nn.utils.parametrize.register_parametrization(m, "weight", nn.Identity())
    return m


def bad_weight():
    m = nn.Linear(2, 2)
    m.weight = nn.Parameter(torch.zeros(3, 3))
    return m


def tied():
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    b.weight = a.weight
    return [a, nn.ReLU(), b]


def without(m, name):
    """``m`` with its parameter or buffer ``name`` set to None (as torch code may do after construction)."""
    setattr(m, name, None)
    return m


def counted(n):
    m = nn.BatchNorm2d(3, momentum=None)
    m.num_batches_tracked.fill_(n)
    return m


LIN = nn.Linear(3, 4)


def twice(m, *between):
    return [LIN, m, *between, m]


CONV = nn.Conv2d(2, 3, 3)
# (id, modules, index of the refused one, text naming the argument)
REFUSALS = [
    ("MaxPool2d-ceil_mode", lambda: [CONV, nn.MaxPool2d(2, ceil_mode=True)], "1", "ceil_mode=True"),
    ("MaxPool2d-dilation", lambda: [nn.MaxPool2d(2, dilation=2)], "0", "dilation=2"),
    ("MaxPool2d-return_indices", lambda: [nn.MaxPool2d(2, return_indices=True)], "0", "return_indices=True"),
    ("AvgPool2d-ceil_mode", lambda: [nn.AvgPool2d(2, ceil_mode=True)], "0", "ceil_mode=True"),
    (
        "AvgPool2d-count_include_pad",
        lambda: [nn.AvgPool2d(3, padding=1, count_include_pad=False)],
        "0",
        "count_include_pad=False",
    ),
    ("AvgPool2d-divisor_override", lambda: [nn.AvgPool2d(2, divisor_override=3)], "0", "divisor_override=3"),
    ("AvgPool2d-padding-too-wide", lambda: [nn.AvgPool2d(2, padding=2)], "0", "padding=2"),
    ("Softmax-dim=1-on-4d", lambda: [CONV, nn.Softmax(dim=1)], "1", "dim=1"),
    ("Softmax-dim=None-on-4d", lambda: [CONV, nn.Softmax()], "1", "dim=None"),
    ("Softmax-dim=0", lambda: [LIN, nn.Softmax(dim=0)], "1", "dim=0"),
    ("Softmax-dim=1-rank-unknown", lambda: [nn.Softmax(dim=1)], "0", "dim=1"),
    ("BatchNorm2d-momentum>1", lambda: [nn.BatchNorm2d(3, momentum=1.5)], "0", "momentum=1.5"),
    ("BatchNorm2d-eps=0", lambda: [nn.BatchNorm2d(3, eps=0.0)], "0", "eps=0"),
    ("BatchNorm1d-bias=False", lambda: [nn.BatchNorm1d(4, bias=False)], "0", "bias=False"),
    ("BatchNorm1d-bias-without-weight", lambda: [LIN, without(nn.BatchNorm1d(4), "weight")], "1", "without a weight"),
    ("BatchNorm2d-running_var-None", lambda: [without(nn.BatchNorm2d(3), "running_var")], "0", "running_var is None"),
    (
        "BatchNorm2d-momentum=None-no-count",
        lambda: [without(nn.BatchNorm2d(3, momentum=None), "num_batches_tracked")],
        "0",
        "num_batches_tracked",
    ),
    ("BatchNorm2d-momentum=None-count>2**24", lambda: [counted(2**24 + 1)], "0", "num_batches_tracked=16777217"),
    ("Conv2d-groups", lambda: [nn.Conv2d(2, 4, 3, groups=2)], "0", "groups=2"),
    (
        "Conv2d-padding_mode",
        lambda: [nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect")],
        "0",
        "padding_mode='reflect'",
    ),
    ("Conv2d-same-even-kernel", lambda: [nn.Conv2d(2, 4, 2, padding="same")], "0", "padding='same'"),
    ("Conv2d-meta-device", lambda: [nn.Conv2d(2, 4, 3, device="meta")], "0", "meta device"),
    ("Dropout-p=1", lambda: [nn.Dropout(1.0)], "0", "p=1.0"),
    ("Flatten-start_dim=0", lambda: [nn.Flatten(0)], "0", "start_dim=0"),
    ("Flatten-start_dim=2-on-4d", lambda: [CONV, nn.Flatten(2)], "1", "start_dim=2"),
    ("Flatten-end_dim=2-on-4d", lambda: [CONV, nn.Flatten(1, 2)], "1", "end_dim=2"),
    ("Flatten-end_dim=2-rank-unknown", lambda: [nn.Flatten(1, 2)], "0", "end_dim=2"),
    ("GELU-approximate", lambda: [nn.GELU(approximate="erf")], "0", "approximate"),
    ("LeakyReLU-negative_slope", lambda: [nn.LeakyReLU(float("nan"))], "0", "negative_slope=nan"),
    ("AdaptiveAvgPool2d-output_size", lambda: [CONV, nn.AdaptiveAvgPool2d(2), nn.Flatten()], "1", "output_size=2"),
    ("AdaptiveAvgPool2d-last", lambda: [CONV, nn.AdaptiveAvgPool2d(1)], "1", "it is the last module"),
    ("AdaptiveAvgPool2d-no-Flatten", lambda: [CONV, nn.AdaptiveAvgPool2d(1), nn.ReLU()], "1", "Flatten()"),
    ("AdaptiveAvgPool2d-Flatten(2)", lambda: [CONV, nn.AdaptiveAvgPool2d(1), nn.Flatten(2)], "1", "Flatten()"),
    ("Linear-on-4d", lambda: [CONV, nn.Linear(5, 2)], "1", "4 axes"),
    ("Linear-weight-shape", lambda: [bad_weight()], "0", "shape (3, 3)"),
    ("Linear-parametrized", lambda: [parametrized()], "0", "subclass of torch.nn.modules.linear.Linear"),
    ("ReLU-subclass", lambda: [LIN, MyReLU()], "1", "subclass"),
    ("ReLU-forward-hook", lambda: [LIN, hooked()], "1", "forward hook"),
    ("nested-path", lambda: [LIN, nn.Sequential(nn.ReLU(), nn.ELU())], "1.1", "no vecnn equivalent"),
    ("ELU", lambda: [nn.ELU()], "0", "no vecnn equivalent"),
    ("LogSoftmax", lambda: [LIN, nn.LogSoftmax(dim=1)], "1", "no vecnn equivalent"),
    ("Conv1d", lambda: [nn.Conv1d(2, 3, 3)], "0", "no vecnn equivalent"),
    ("Dropout2d", lambda: [nn.Dropout2d(0.1)], "0", "no vecnn equivalent"),
    ("user-Residual", lambda: [Residual()], "0", "no vecnn equivalent"),
    ("Linear-used-twice", lambda: twice(nn.Linear(4, 4), nn.ReLU()), "3", "same tensor as module 1's weight"),
    ("BatchNorm-used-twice-nested", lambda: [LIN, nn.Sequential(*twice(nn.BatchNorm1d(4))[1:])], "1.1", "same tensor"),
    ("tied-weights", tied, "2", "its weight is the same tensor as module 0's weight"),
]


@pytest.mark.parametrize("make, index, argument", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusal_names_module_and_argument(make, index, argument):
    modules = make()
    net = nn.Sequential(*modules)
    refused = net
    for i in index.split("."):
        refused = refused[int(i)]
    with pytest.raises(ValueError) as info:
        from_torch(net)
    msg = str(info.value)
    assert msg.startswith(f"from_torch: module {index} ")
    assert " ".join(repr(refused).split()) in msg
    assert argument in msg


def test_global_hook_is_refused():
    handle = nn.modules.module.register_module_forward_hook(lambda mod, args, out: out)
    try:
        with pytest.raises(ValueError, match="global module hooks are registered"):
            from_torch(nn.Sequential(nn.ReLU()))
    finally:
        handle.remove()
    assert len(from_torch(nn.Sequential(nn.ReLU())).layers) == 1


def test_hook_on_the_network_is_refused():
    net = nn.Sequential(nn.ReLU())
    net.register_forward_pre_hook(lambda mod, args: None)
    with pytest.raises(ValueError, match="the network Sequential.*forward pre-hook"):
        from_torch(net)


def test_only_identity_is_refused():
    with pytest.raises(ValueError, match="holds no module that computes anything"):
        from_torch(nn.Sequential(nn.Identity()))


def test_refused_arguments_do_change_the_output():
    """The refusals are needed: torch computes something else with each of these arguments than
    with the value vecnn has (so mapping them silently would give a different network)."""
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 7, 7)).astype(np.float32))
    pairs = [
        (nn.MaxPool2d(2, ceil_mode=True), nn.MaxPool2d(2)),
        (nn.MaxPool2d(2, dilation=2), nn.MaxPool2d(2)),
        (nn.AvgPool2d(3, padding=1, count_include_pad=False), nn.AvgPool2d(3, padding=1)),
        (nn.AvgPool2d(2, divisor_override=3), nn.AvgPool2d(2)),
        (nn.Softmax(dim=1), nn.Softmax(dim=-1)),
    ]
    for refused, mapped in pairs:
        a, b = refused(x), mapped(x)
        assert a.shape != b.shape or not torch.allclose(a, b, atol=1e-3), refused
