"""The switch and the lazy loader of vecnn's compiled kernels (``vecnn.ops._numba``).

``vecnn.kernels.enabled = False`` makes the NumPy backend the CPU backend (as does an install
without numba); the compiled CPU backend (``vecnn.ops.numba_backend``) is the only user of what
``get()`` returns. A failure to compile is never silent: ``Lazy.error`` keeps it and
``vecnn backends`` prints it.
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
        #: why the kernels are unavailable ("ModuleNotFoundError: No module named 'numba'"), or None
        self.error = None

    def get(self):
        """The compiled kernels, or None (numba missing or disabled, or it failed to compile)."""
        if not enabled or self._failed:
            return None
        if self._compiled is None:
            import sys

            before = set(sys.modules)
            try:
                self._compiled = self._compile_fn()
            except Exception as e:  # no numba, or it cannot compile here: the NumPy paths remain,
                self._failed = True  # and vecnn.ops.report() says why
                self.error = f"{type(e).__name__}: {e}"
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
    from .ops import _numba

    return _numba


_kernels = Lazy(_compile)
get = _kernels.get
