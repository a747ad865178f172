"""hw1p2 dev report: confusion matrix, per-phoneme accuracy, majority-class baseline, and the confusion PNG.

The figure is drawn on matplotlib's Agg canvas directly (no pyplot, no global backend switch), rows normalized
so each row shows where one true phoneme's frames went.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.files import atomic_write


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = true class, columns = predicted class."""
    pairs = np.asarray(truth, np.int64) * num_classes + np.asarray(predicted, np.int64)
    return np.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def accuracy(confusion: np.ndarray) -> float:
    return 100.0 * float(np.trace(confusion)) / max(1, int(confusion.sum()))


def per_class_accuracy(confusion: np.ndarray, symbols: list[str]) -> dict[str, float | None]:
    """Percent of each phoneme's frames classified right; None for a phoneme with no dev frames."""
    support = confusion.sum(axis=1)
    return {symbol: (round(100.0 * float(confusion[i, i]) / support[i], 2) if support[i] else None)
            for i, symbol in enumerate(symbols)}


def majority_baseline(train_labels: np.ndarray, dev_labels: np.ndarray, num_classes: int) -> tuple[int, float]:
    """The most frequent train class and the dev accuracy of predicting it for every frame."""
    majority = int(np.argmax(np.bincount(np.asarray(train_labels, np.int64), minlength=num_classes)))
    return majority, 100.0 * float(np.mean(np.asarray(dev_labels) == majority))


def plot_confusion(confusion: np.ndarray, symbols: list[str], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    support = confusion.sum(axis=1, keepdims=True)
    rates = np.divide(confusion, support, out=np.zeros(confusion.shape, float), where=support > 0)
    size = max(6.0, 0.22 * len(symbols) + 2.0)
    figure = Figure(figsize=(size + 1.5, size))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(rates, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    ticks = np.arange(len(symbols))
    axes.set_xticks(ticks, symbols, rotation=90, fontsize=7)
    axes.set_yticks(ticks, symbols, fontsize=7)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true phoneme's frames")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png"))
