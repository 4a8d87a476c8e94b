"""PNG pictures of a training run: curves, confusion matrix, misclassified examples.

matplotlib is imported here only, with the file-only Agg backend, so plots work without a
display and ``import vecnn`` stays light.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def curves(history: dict, path) -> Path:
    """Loss and (if present) accuracy per epoch, train and validation, side by side."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    keys = [k for k in ("loss", "accuracy", "mse") if k in history]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        epochs = np.arange(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], "o-", label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "s--", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Counts ``(true, predicted)``, computed with one ``bincount`` (no loop over samples)."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


#: above this many classes the confusion matrix has no numbers in its cells (they would not fit)
ANNOTATE_CLASSES = 30


def confusion(y_true, y_pred, class_names, path) -> Path:
    """The confusion matrix as a picture: counts in the cells up to ``ANNOTATE_CLASSES`` classes,
    colour only above; the figure stays at most 14 inches square. Refuses more than
    ``vecnn.limits.MAX_PLOT_CLASSES`` classes (``ValueError``) before drawing anything."""
    from .limits import MAX_PLOT_CLASSES

    k = len(class_names)
    if k > MAX_PLOT_CLASSES:
        raise ValueError(
            f"{k} classes are more than a confusion-matrix plot shows "
            f"(vecnn.limits.MAX_PLOT_CLASSES = {MAX_PLOT_CLASSES})"
        )
    plt = _pyplot()
    cm = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), k)
    side = min(14.0, 1.0 + 0.55 * k)
    fig, ax = plt.subplots(figsize=(side, min(14.0, 0.8 + 0.5 * k)))
    ax.imshow(cm, cmap="Blues")
    if k <= ANNOTATE_CLASSES:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if cm[i, j] > cm.max() / 2 else "black",
                )
    size = 7 if k <= ANNOTATE_CLASSES else 4
    ax.set_xticks(
        range(k),
        class_names,
        rotation=60 if k <= ANNOTATE_CLASSES else 90,
        ha="right" if k <= ANNOTATE_CLASSES else "center",
        fontsize=size,
    )
    ax.set_yticks(range(k), class_names, fontsize=size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix (accuracy {np.trace(cm) / max(cm.sum(), 1):.4f})")
    fig.tight_layout()
    return _save(fig, path)


def image_view(sample_shape) -> tuple[str, str | None]:
    """How ``misclassified`` draws samples of ``sample_shape``: ``(mode, note)`` with mode
    "gray" (``(H, W)`` or ``(1, H, W)``), "rgb" (``(3, H, W)``) or "channel0" (``(C, H, W)``
    with another C: the first channel, said in ``note``). Raises ``ValueError`` for samples
    that are not images (any other number of axes)."""
    shape = tuple(sample_shape)
    if len(shape) == 2 or (len(shape) == 3 and shape[0] == 1):
        return "gray", None
    if len(shape) == 3 and shape[0] == 3:
        return "rgb", None
    if len(shape) == 3:
        return "channel0", f"misclassified.png shows channel 0 of the {shape[0]} channels of each image"
    raise ValueError(f"samples of shape {shape} are not images (expected (H, W) or (C, H, W))")


def misclassified(X, y_true, y_pred, class_names, path, n=25) -> Path:
    """A grid of up to ``n`` misclassified test images with true and predicted classes
    (grey for one channel, colour for three, the first channel otherwise; see ``image_view``)."""
    mode, _ = image_view(X.shape[1:])
    plt = _pyplot()
    wrong = np.flatnonzero(y_true != y_pred)[:n]
    cols = 5
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        img = np.asarray(X[i], np.float64)
        if mode == "rgb":  # any value range: scale to [0, 1] for imshow
            img = np.moveaxis(img, 0, -1)
            lo, hi = np.nanmin(img), np.nanmax(img)
            img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        elif img.ndim == 3:
            img = img[0]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax.set_title(f"true {class_names[y_true[i]]}\npred {class_names[y_pred[i]]}", fontsize=7)
    if not len(wrong):
        axes.flat[0].set_title("no misclassified images")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path) -> Path:
    """Write ``fig`` as a PNG (an ordinary file: its mode follows the umask) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
