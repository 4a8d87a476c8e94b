"""Fused optimizer kernels, compiled with numba when it is installed.

An optimizer step written as NumPy whole-buffer operations makes one pass over memory per
operation (Adam: about eight, plus a copy for the undo buffer and a pass for the finiteness
check); each kernel here makes one pass in total. Each kernel also stores the previous
parameters in ``old`` (so a diverged step can be undone) and returns ``sum(new_p * 0)``,
which is 0 exactly when every new parameter is finite (``inf * 0`` and ``nan * 0`` are NaN).

The NumPy versions in ``vecnn.optim`` stay the readable reference and the fallback: set
``vecnn.kernels.enabled = False`` (the tests run both) or uninstall numba to use them.
All arithmetic is float32, with float32 constants, so nothing is silently widened.
"""
from __future__ import annotations

enabled = True


class Lazy:
    """Kernels compiled on first use by ``compile_fn`` (numba's ``njit`` with an on-disk cache),
    shared by every module of compiled kernels so that one switch, ``vecnn.kernels.enabled``,
    selects them or the NumPy paths."""

    def __init__(self, compile_fn):
        self._compile_fn = compile_fn
        self._compiled = None
        self._failed = False

    def get(self):
        """The compiled kernels, or None (numba missing or disabled, or it failed to compile)."""
        if not enabled or self._failed:
            return None
        if self._compiled is None:
            import sys

            before = set(sys.modules)
            try:
                self._compiled = self._compile_fn()
            except Exception:        # no numba, or it cannot compile here: the NumPy paths remain
                self._failed = True
                return None
            except BaseException:
                # Ctrl-C in the middle of importing numba (a second or so on first use) leaves
                # half-initialized modules in sys.modules, and every later import would find
                # them broken ("module 'numba' has no attribute 'core'"): forget them, so that
                # the next call imports afresh
                for name in set(sys.modules) - before:
                    del sys.modules[name]
                raise
        return self._compiled

    def compiled(self):
        """The kernels compiled so far (for a backward pass whose forward used them, whatever
        the switch says meanwhile), or None."""
        return self._compiled


def _compile():
    from . import kernels_numba

    return kernels_numba


_kernels = Lazy(_compile)
get = _kernels.get
