"""The one place where vecnn bounds allocations whose size comes from input.

A label, an image header, a model file's metadata or a flag can name a size far beyond what
the data justifies (a label of 10,000,000 means a 10,000,001-way output layer; an ``.npy``
header can declare 10^12 elements). Each such size is checked here, before anything is
allocated, and refused with a ``ValueError`` that names what asked for it and the limit.

The limits are generous for real use and can be raised per process through environment
variables (``VECNN_MAX_CLASSES`` and so on) by users who really need more.
"""

from __future__ import annotations

import math
import os


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}: expected a positive integer, received {text!r}") from None
    if value < 1:
        raise ValueError(f"environment variable {name}: expected a positive integer, received {text!r}")
    return value


#: classes of a classifier (output width inferred from labels); ImageNet-21k has 21,841
MAX_CLASSES = _env_int("VECNN_MAX_CLASSES", 100_000)
#: elements of one array read from a file or built from a declared size (4 GiB of float32)
MAX_ELEMENTS = _env_int("VECNN_MAX_ELEMENTS", 2**30)
#: pixels of one image (Pillow's own bomb limit is about 89 million)
MAX_IMAGE_PIXELS = _env_int("VECNN_MAX_IMAGE_PIXELS", 64 * 1024 * 1024)
#: parameters of one model (1 billion float32: 4 GiB)
MAX_PARAMS = _env_int("VECNN_MAX_PARAMS", 2**30)
#: classes drawn in a confusion-matrix plot (more: the plot is skipped, said in the log)
MAX_PLOT_CLASSES = 100


def check_size(what: str, n, limit: int, env: str | None = None) -> int:
    """Return ``n`` as an int if ``0 <= n <= limit``, else raise ``ValueError`` naming ``what``."""
    n = int(n)
    if n < 0:
        raise ValueError(f"{what}: a size cannot be negative, received {n:,}")
    if n > limit:
        hint = f" (set {env} to raise it)" if env else ""
        raise ValueError(f"{what}: {n:,} is more than vecnn allows ({limit:,}){hint}")
    return n


def check_shape(what: str, shape, limit: int | None = None) -> tuple:
    """Check a declared shape (non-negative ints) and that its element count is within ``limit``
    (default ``MAX_ELEMENTS``), without allocating; returns it as a tuple of ints."""
    limit = MAX_ELEMENTS if limit is None else limit
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected a shape of integers, received {shape!r}") from None
    if any(d < 0 for d in dims):
        raise ValueError(f"{what}: a shape cannot have negative sizes, received {dims}")
    n = math.prod(dims)
    if n > limit:
        raise ValueError(
            f"{what}: shape {dims} holds {n:,} elements, more than vecnn allows ({limit:,}; "
            f"set VECNN_MAX_ELEMENTS to raise it)"
        )
    return dims


def check_classes(what: str, n_classes) -> int:
    """The number of classes a classifier would get (e.g. ``max(label) + 1``)."""
    return check_size(f"{what}: number of classes", n_classes, MAX_CLASSES, "VECNN_MAX_CLASSES")


#: bytes of memory per parameter while training: the layer's own array and the flat buffer it
#: moves into, the gradients, two optimizer slots (Adam) and the undo copy, float32 each
TRAINING_BYTES_PER_PARAM = 6 * 4
#: bytes per activation element of one batch: the output, its gradient and reused buffers
TRAINING_BYTES_PER_ACTIVATION = 4 * 4
#: the share of the available memory a model may plan to use (the rest: data, Python, the OS)
MEMORY_SHARE = 0.75


def available_memory() -> int | None:
    """Bytes this process can still allocate: what the system says is available (Linux
    ``MemAvailable``), or less under an address-space limit (``ulimit -v``); None if unknown."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/status") as f:
                used = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
            found.append(max(0, soft - used))
    except (ImportError, OSError, ValueError, IndexError, StopIteration):
        pass
    return min(found) if found else None


def check_memory(what: str, nbytes) -> None:
    """Refuse, before allocating, what would need more memory than the machine has available."""
    avail = available_memory()
    if avail is not None and nbytes > MEMORY_SHARE * avail:
        raise ValueError(
            f"{what} would need about {nbytes / 2**30:,.1f} GiB of memory, more than "
            f"{MEMORY_SHARE:.0%} of the {avail / 2**30:,.1f} GiB this machine has available"
        )
