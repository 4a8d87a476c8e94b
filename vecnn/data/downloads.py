"""Downloads of the named datasets: only when asked, always checked against a SHA-256 digest.

Each file is streamed into a temporary file next to its destination while its SHA-256 is
computed; only when the length and the digest match the published ones is it renamed into
place (an atomic rename). On a bad digest, a short or broken transfer, a timeout or a server
that is gone, the temporary file is removed and a ``DownloadError`` says what happened: a
failed download never leaves a partial file behind.

The digests are the published ones (tensorflow/datasets' ``url_checksums``; see
``named.DATASETS``). The base URL can be replaced (``mirror=`` or ``$VECNN_MIRROR``) to fetch
from another copy of the same files; the digests are checked all the same.

Why not ``pooch`` (which SciPy and scikit-image use for the same job): ``pooch.retrieve``
streams whatever the server sends into its temporary file and checks only the digest at the
end, with no bound on the length. Measured against a mirror that sends 100 MB where the
published file has 16 KB, pooch wrote all 100 MB before refusing it (and an endless stream
is never refused), while ``fetch`` stops one read past the published size; three of the
tests in ``tests/test_download.py`` (a length other than the published one, announced or
not, named as such) fail with it, and it logs each download to standard error. Keeping the
bound means writing pooch's downloader ourselves, which is most of this module: what pooch
would add (a temporary file, a digest, a rename) is ``files.atomic_open`` and ``hashlib``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..files import atomic_open
from .named import FILES, cache_dir, info

_CHUNK = 1 << 16
TIMEOUT = 30.0  # seconds without progress before a transfer is abandoned


class DownloadError(OSError):
    """A download failed (network, server, short transfer, or a digest mismatch);
    nothing was left behind."""


def download(name: str, dest=None, mirror: str | None = None, timeout: float = TIMEOUT) -> Path:
    """Download dataset ``name``'s four files into ``dest`` (default: the user cache,
    ``cache_dir() / name``), skipping files already there; returns the folder.

    Parameters
    ----------
    name : str
        ``fashion-mnist``, ``mnist`` or ``kmnist``.
    dest : str or Path, optional
    mirror : str, optional
        Base URL holding the files (default: ``$VECNN_MIRROR``, else the official mirror).
    timeout : float
        Seconds to wait for the server at each step (connect, each read).
    """
    d = info(name)
    if not d.sha256:
        raise ValueError(f"dataset {d.name!r} is {d.how_to_get}; there is nothing to download")
    base = mirror or os.environ.get("VECNN_MIRROR") or d.mirror
    if base is None:
        raise ValueError(f"dataset {d.name!r} names no mirror to download from; pass mirror=...")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"mirror {base!r}: expected an http:// or https:// URL")
    dest = Path(dest).expanduser() if dest is not None else cache_dir() / d.name
    dest.mkdir(parents=True, exist_ok=True)
    for stem in FILES.values():
        fname = stem + ".gz"
        target = dest / fname
        if not target.exists():
            fetch(base.rstrip("/") + "/" + fname, target, d.sha256[fname], d.size.get(fname), timeout)
    return dest


def fetch(url: str, target, sha256: str, size: int | None = None, timeout: float = TIMEOUT) -> Path:
    """Download ``url`` to ``target`` atomically, verifying its length (when known) and SHA-256.

    Raises ``DownloadError`` and leaves nothing behind when anything goes wrong.
    """
    target = Path(target)
    with atomic_open(target) as out:  # a failure below leaves nothing behind
        digest, n = _stream(url, out, size, timeout)
        if size is not None and n != size:
            raise DownloadError(f"{url}: received {n:,} bytes, expected {size:,} (incomplete transfer)")
        if digest != sha256:
            raise DownloadError(
                f"{url}: SHA-256 mismatch: expected {sha256}, received {digest} "
                f"({n:,} bytes); the file was corrupted in transit or is not the "
                f"published one. Nothing was kept"
            )
    return target


def _stream(url, out, size, timeout):
    """Copy ``url`` into ``out``; returns (sha256 hex, bytes). Never reads past ``size`` + 1."""
    h = hashlib.sha256()
    n = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            if size is not None and length is not None and length != size:
                raise DownloadError(
                    f"{url}: the server offers {length:,} bytes, expected {size:,}; not the published file"
                )
            limit = size if size is not None else length
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                n += len(chunk)
                if limit is not None and n > limit:
                    raise DownloadError(f"{url}: the server sent more than the expected {limit:,} bytes")
                h.update(chunk)
                out.write(chunk)
            if length is not None and n < length:
                raise DownloadError(f"{url}: the transfer broke off after {n:,} of {length:,} bytes")
    except DownloadError:
        raise
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: the server answered HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise DownloadError(f"{url}: cannot reach the server ({e.reason})") from None
    except TimeoutError:
        raise DownloadError(f"{url}: no answer within {timeout:g} s (timed out after {n:,} bytes)") from None
    except (OSError, ValueError, http.client.HTTPException) as e:  # reset, IncompleteRead, ...
        raise DownloadError(f"{url}: the transfer failed after {n:,} bytes ({type(e).__name__}: {e})") from None
    return h.hexdigest(), n
