"""Files that appear whole or not at all: the one place vecnn writes a file it must not leave
half-written (model files, checkpoints, run logs, downloads).

A small utility with no vecnn imports, so that the model-file format (``vecnn.io``) and the
dataset downloads (``vecnn.data.downloads``) share it without depending on each other.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask, read without changing it where the system tells it (Linux's
    ``/proc/self/status``); elsewhere by setting and restoring it under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8) & 0o777
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path):
    """A binary file that appears at ``path`` only when the ``with`` block succeeds.

    Writes go to a temporary file in the same folder, which is flushed, synced and renamed
    over ``path`` at the end; on any error (or Ctrl-C) it is removed, so ``path`` keeps its
    previous content and nothing is left behind. The file gets the mode a plain ``open``
    would give a new file, ``0o666`` less the user's umask (``mkstemp`` alone makes it 0600).
    """
    path = Path(path)
    if path.is_dir() or (path.exists() and not path.is_file()):
        # renaming over it would replace a directory's place or a device (as root, /dev/null
        # itself) with a regular file
        raise ValueError(f"{path}: exists and is not a regular file; vecnn writes only regular files")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{path}: {parent} is a file, not a directory")
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        mode = 0o666 & ~_umask()
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        else:  # (Windows: only the read-only bit counts)
            os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_open``)."""
    with atomic_open(path) as f:
        f.write(data)
