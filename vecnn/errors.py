"""Input checks shared by layers, losses and the model: refuse bad input where it enters.

Each check raises ``ValueError`` naming *where* (a layer, an argument) and the expected and
received shapes or values, instead of letting a broadcasting error surface deep in NumPy.
"""

from __future__ import annotations


def fmt_shape(shape) -> str:
    """``(None, 784)`` style shape text, ``n`` standing for the batch dimension."""
    parts = ["n" if d is None else str(d) for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def check_input(where, x, expected: tuple) -> None:
    """Check that ``x`` is an array of shape ``(n, *expected)``; ``None`` entries match anything.

    ``where`` names the place (a string, or an object whose ``repr`` is only taken on error).
    """
    shape = getattr(x, "shape", None)
    if shape is None:
        raise ValueError(f"{_name(where)}: expected an array, received {type(x).__name__}")
    full = (None, *expected)
    if len(shape) != len(full) or any(e is not None and e != s for e, s in zip(full, shape)):
        where = _name(where)
        raise ValueError(f"{where}: expected input of shape {fmt_shape(full)}, received {fmt_shape(shape)}")


def _name(where) -> str:
    return where if isinstance(where, str) else repr(where)


def check_finite(where: str, x) -> None:
    """Refuse NaN or Inf, saying how many and where the first one is."""
    if x.dtype.kind in "iub":
        return
    from . import ops

    backend = ops.get(x)
    if backend.all_finite(x):  # one pass (compiled, split across BLAS's threads)
        return
    xp = backend.xp
    finite = xp.isfinite(x)
    bad = xp.argwhere(~finite)
    raise ValueError(
        f"{where}: contains {len(bad)} non-finite value(s) (NaN or Inf), "
        f"the first at index {tuple(int(i) for i in bad[0])}"
    )
