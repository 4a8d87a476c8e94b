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


def confusion(y_true, y_pred, class_names, path) -> Path:
    plt = _pyplot()
    k = len(class_names)
    cm = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), k)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    ax.imshow(cm, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(k), class_names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix (accuracy {np.trace(cm) / max(cm.sum(), 1):.4f})")
    fig.tight_layout()
    return _save(fig, path)


def misclassified(X, y_true, y_pred, class_names, path, n=25) -> Path:
    """A grid of up to ``n`` misclassified test images with true and predicted classes."""
    plt = _pyplot()
    wrong = np.flatnonzero(y_true != y_pred)[:n]
    cols = 5
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        img = X[i]
        img = img[0] if img.ndim == 3 and img.shape[0] == 1 else np.moveaxis(img, 0, -1) if img.ndim == 3 else img
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax.set_title(f"true {class_names[y_true[i]]}\npred {class_names[y_pred[i]]}", fontsize=7)
    if not len(wrong):
        axes.flat[0].set_title("no misclassified images")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
