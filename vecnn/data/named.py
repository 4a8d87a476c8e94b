"""Named datasets: what each one is, where vecnn looks for it, and how to get it.

``digits`` is built in. The MNIST-style sets (``fashion-mnist``, ``mnist``, ``kmnist``) are
four IDX files each, plain or ``.gz``, with their standard names::

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

Where they are looked for (DESIGN.md, "Data"):

* an explicit ``root=`` is the only place looked: the dataset's folder itself, or a parent
  holding ``<name>/`` (or torchvision's ``<Name>/raw/``);
* otherwise, in order: ``$VECNN_DATA/<name>`` (``$VECNN_DATA`` may list several folders,
  separated by ``os.pathsep``), the user cache ``~/.cache/vecnn/<name>``
  (``$XDG_CACHE_HOME/vecnn/<name>`` when that is set), then the system folder
  ``/usr/share/datasets/<name>`` (Debian's ``dataset-fashion-mnist`` package installs
  Fashion-MNIST there).

The first folder holding any of the files is used; an incomplete folder or a file that fails
validation is an error, never silently skipped.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backend import DTYPE
from . import digits as _digits
from .idx import read_idx

SYSTEM_DIR = Path("/usr/share/datasets")
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class DatasetNotFoundError(ValueError, FileNotFoundError):
    """A named dataset is in none of the places looked. Its message lists every place and
    how to get the dataset. (A ``ValueError`` for the CLI's exit code 2, and a
    ``FileNotFoundError`` for callers who catch that.)"""


class IncompleteDatasetError(ValueError):
    """A folder holds some but not all of a dataset's files (``folder`` says which)."""

    def __init__(self, message, folder):
        super().__init__(message)
        self.folder = folder


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    class_names: tuple
    shape: tuple  # per-sample (C, H, W)
    n_train: int
    n_test: int
    license: str
    homepage: str
    mirror: str | None = None  # base URL of the official download mirror
    sha256: dict = field(default_factory=dict)  # file name (.gz) -> published SHA-256
    size: dict = field(default_factory=dict)  # file name (.gz) -> size in bytes
    apt: str | None = None  # Debian package that installs it into SYSTEM_DIR
    torchvision_dir: str | None = None

    @property
    def how_to_get(self) -> str:
        if self.name == "digits":
            return "built in"
        ways = [
            f"`vecnn train --dataset {self.name} --download` or "
            f"vecnn.data.load({self.name!r}, download=True) (from {self.mirror}, SHA-256 checked)"
        ]
        if self.apt:
            ways.insert(0, f"`apt-get install {self.apt}` (installs it into {SYSTEM_DIR / self.name})")
        return "; or ".join(ways)


_MNIST_CLASSES = tuple(str(d) for d in range(10))
DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo(
            "digits",
            "UCI optical handwritten digits (built in)",
            _MNIST_CLASSES,
            (1, 8, 8),
            1442,
            355,
            "CC BY 4.0; E. Alpaydin, C. Kaynak (1998), DOI 10.24432/C50P49",
            "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
        ),
        DatasetInfo(
            "fashion-mnist",
            "Fashion-MNIST (Zalando article images)",
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            (1, 28, 28),
            60000,
            10000,
            "MIT; H. Xiao, K. Rasul, R. Vollgraf (2017), arXiv:1708.07747",
            "https://github.com/zalandoresearch/fashion-mnist",
            mirror="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            # published in tensorflow/datasets, tensorflow_datasets/url_checksums/fashion_mnist.txt
            sha256={
                "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            },
            size={
                "train-images-idx3-ubyte.gz": 26421880,
                "train-labels-idx1-ubyte.gz": 29515,
                "t10k-images-idx3-ubyte.gz": 4422102,
                "t10k-labels-idx1-ubyte.gz": 5148,
            },
            apt="dataset-fashion-mnist",
            torchvision_dir="FashionMNIST",
        ),
        DatasetInfo(
            "mnist",
            "MNIST handwritten digits",
            _MNIST_CLASSES,
            (1, 28, 28),
            60000,
            10000,
            "CC BY-SA 3.0; Y. LeCun, C. Cortes, C. J. C. Burges",
            "http://yann.lecun.com/exdb/mnist/",
            mirror="https://ossci-datasets.s3.amazonaws.com/mnist/",
            # published in tensorflow/datasets, tensorflow_datasets/url_checksums/mnist.txt (the
            # same files as LeCun's originals, which ossci-datasets mirrors)
            sha256={
                "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            },
            size={
                "train-images-idx3-ubyte.gz": 9912422,
                "train-labels-idx1-ubyte.gz": 28881,
                "t10k-images-idx3-ubyte.gz": 1648877,
                "t10k-labels-idx1-ubyte.gz": 4542,
            },
            torchvision_dir="MNIST",
        ),
        DatasetInfo(
            "kmnist",
            "Kuzushiji-MNIST (cursive Japanese hiragana)",
            ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
            (1, 28, 28),
            60000,
            10000,
            "CC BY-SA 4.0; T. Clanuwat et al. (2018), arXiv:1812.01718",
            "https://github.com/rois-codh/kmnist",
            mirror="http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
            # published in tensorflow/datasets, tensorflow_datasets/url_checksums/kmnist.txt
            sha256={
                "train-images-idx3-ubyte.gz": "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
                "train-labels-idx1-ubyte.gz": "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
                "t10k-images-idx3-ubyte.gz": "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
                "t10k-labels-idx1-ubyte.gz": "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
            },
            size={
                "train-images-idx3-ubyte.gz": 18165135,
                "train-labels-idx1-ubyte.gz": 29497,
                "t10k-images-idx3-ubyte.gz": 3041136,
                "t10k-labels-idx1-ubyte.gz": 5120,
            },
            torchvision_dir="KMNIST",
        ),
    ]
}


# -- names -------------------------------------------------------------------------------------
def info(name: str) -> DatasetInfo:
    """What vecnn knows about dataset ``name`` (``fashion_mnist`` and ``Fashion-MNIST`` work too)."""
    key = str(name).strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "k-mnist": "kmnist"}.get(key, key)
    if key in DATASETS:
        return DATASETS[key]
    close = difflib.get_close_matches(key, DATASETS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    known = "\n".join(f"  {d.name}: {d.how_to_get}" for d in DATASETS.values())
    raise ValueError(f"unknown dataset {name!r}.{hint} Known datasets and how to get each:\n{known}")


def class_names(name: str) -> tuple:
    """The class names of dataset ``name``, index i naming label i."""
    return info(name).class_names


# -- where to look -------------------------------------------------------------------------------
def cache_dir() -> Path:
    """vecnn's user cache: ``$XDG_CACHE_HOME/vecnn`` (when set to an absolute path), else
    ``~/.cache/vecnn``. Downloads go to ``cache_dir() / <name>``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "vecnn"


def _subfolders(base: Path, d: DatasetInfo) -> list[Path]:
    subs = [base / d.name]
    if d.torchvision_dir:
        subs.append(base / d.torchvision_dir / "raw")
    return subs


def search_path(name: str, root=None) -> list[tuple[str, Path | None]]:
    """The folders looked in for ``name``, in order, each with a label saying why."""
    d = info(name)
    if root is not None:
        root = Path(root).expanduser()
        return [("root=", root)] + [("root=", p) for p in _subfolders(root, d)]
    env = [e for e in os.environ.get("VECNN_DATA", "").split(os.pathsep) if e]
    places: list[tuple[str, Path | None]] = [
        ("$VECNN_DATA", p) for e in env for p in _subfolders(Path(e).expanduser(), d)
    ]
    places = places or [("$VECNN_DATA (not set)", None)]
    places.append(("user cache", cache_dir() / d.name))
    places.append(("system", SYSTEM_DIR / d.name))
    return places


def _files_in(folder: Path) -> dict[str, Path]:
    """role -> path of each IDX file present in ``folder`` (plain preferred over .gz)."""
    found = {}
    for role, stem in FILES.items():
        for fname in (stem, stem + ".gz"):
            p = folder / fname
            if p.is_file():
                found[role] = p
                break
    return found


def locate(name: str, root=None) -> Path:
    """The folder holding dataset ``name``'s four files. Raises ``DatasetNotFoundError``
    listing every place looked, or ``IncompleteDatasetError`` (a ``ValueError``) for a folder
    holding only some of the files."""
    d = info(name)
    if d.name == "digits":
        return _digits.PATH.parent
    looked = []
    for label, folder in search_path(d.name, root):
        if folder is None:
            looked.append(f"  {label}")
            continue
        found = _files_in(folder)
        if len(found) == len(FILES):
            return folder
        if found:
            missing = ", ".join(f"{FILES[r]}[.gz]" for r in FILES if r not in found)
            raise IncompleteDatasetError(
                f"dataset {d.name!r}: {folder} holds only some of its files; missing {missing}. "
                f"Complete or remove that folder. To get it: {d.how_to_get}",
                folder,
            )
        looked.append(f"  {folder} ({label}: {'no dataset files' if folder.is_dir() else 'no such folder'})")
    where = "\n".join(looked)
    raise DatasetNotFoundError(f"dataset {d.name!r} not found. Looked in:\n{where}\nTo get it: {d.how_to_get}")


# -- loading -------------------------------------------------------------------------------------
def load(name: str, root=None, download: bool = False, mirror: str | None = None):
    """Load a named dataset as ``(X_train, y_train, X_test, y_test)``.

    Parameters
    ----------
    name : str
        ``digits`` (built in), ``fashion-mnist``, ``mnist`` or ``kmnist``.
    root : str or Path, optional
        The only place looked: the dataset's folder or its parent. Default: ``$VECNN_DATA``,
        the user cache, then ``/usr/share/datasets/<name>`` (see the module docstring).
    download : bool
        When the files are not found, download them from the official mirror into the user
        cache (or into ``root/<name>`` when ``root`` is given), each checked against its
        published SHA-256. Never done unless asked.
    mirror : str, optional
        Base URL to download from instead of the official mirror (else ``$VECNN_MIRROR``);
        the SHA-256 digests are checked all the same.

    Returns
    -------
    X_train, X_test : float32 ``(n, 1, H, W)`` in [0, 1]
    y_train, y_test : int64 ``(n,)``

    Examples
    --------
    >>> import vecnn as vn
    >>> X_train, y_train, X_test, y_test = vn.data.load("digits")
    >>> X_train.dtype, X_train.shape[1:], y_train.dtype
    (dtype('float32'), (1, 8, 8), dtype('int64'))
    """
    d = info(name)
    if d.name == "digits":
        return _digits.load_digits()
    dest = Path(root).expanduser() / d.name if root is not None else cache_dir() / d.name
    try:
        folder = locate(d.name, root)
    except (DatasetNotFoundError, IncompleteDatasetError) as e:
        # a download that broke off earlier left verified files in dest: complete it
        if not download or (isinstance(e, IncompleteDatasetError) and e.folder != dest):
            raise
        from .downloads import download as _download

        folder = _download(d.name, dest=dest, mirror=mirror)
    files = _files_in(folder)
    X_train, y_train = _read_pair(d, files["train_images"], files["train_labels"])
    X_test, y_test = _read_pair(d, files["test_images"], files["test_labels"])
    return X_train, y_train, X_test, y_test


def _read_pair(d: DatasetInfo, images_path: Path, labels_path: Path):
    images, labels = read_idx(images_path), read_idx(labels_path)
    c, h, w = d.shape
    if images.dtype != np.uint8 or images.shape[1:] != (h, w):
        raise ValueError(
            f"{images_path}: expected {d.name} images of shape (n, {h}, {w}) uint8, found {images.shape} {images.dtype}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected labels of shape (n,) uint8, found {labels.shape} {labels.dtype}")
    if len(labels) != len(images):
        raise ValueError(
            f"{d.name}: {images_path.name} holds {len(images)} images but {labels_path.name} holds {len(labels)} labels"
        )
    if len(labels) and labels.max() >= len(d.class_names):
        raise ValueError(f"{labels_path}: label {int(labels.max())} out of range for {len(d.class_names)} classes")
    X = np.empty((len(images), c, h, w), dtype=DTYPE)  # (N, 1, H, W)
    np.divide(images[:, None], DTYPE(255), out=X, dtype=DTYPE)  # exactly pixel / 255, as torchvision
    return X, labels.astype(np.int64)


# -- listing ---------------------------------------------------------------------------------------
def available() -> list[dict]:
    """Each known dataset with where it was found (``path``, or ``None``) and how to get it;
    ``problem`` says what is wrong with a folder that holds only some of the files."""
    out = []
    for d in DATASETS.values():
        entry = {"name": d.name, "title": d.title, "path": None, "problem": None, "how_to_get": d.how_to_get}
        try:
            entry["path"] = str(_digits.PATH if d.name == "digits" else locate(d.name))
        except DatasetNotFoundError:
            pass
        except ValueError as e:
            entry["problem"] = str(e)
        out.append(entry)
    return out


def describe() -> list[str]:
    """One line per known dataset for ``vecnn datasets``: where it was found or how to get it."""
    lines = []
    width = max(len(n) for n in DATASETS)
    for e in available():
        if e["name"] == "digits":
            where = f"built in ({e['path']})"
        elif e["path"]:
            where = f"found in {e['path']}"
        elif e["problem"]:
            where = f"PROBLEM: {e['problem']}"
        else:
            where = f"not found; get it with {e['how_to_get']}"
        lines.append(f"{e['name']:<{width}}  {where}")
    return lines
