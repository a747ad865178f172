"""Attention maps as PNGs (matplotlib, Agg backend): the first thing to look at when an attention model does not
learn — a clean, roughly diagonal map means the speller has found the alignment."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.files import atomic_write


def plot_attention(weights, path: Path, title: str, output_labels: list[str] | None = None) -> Path:
    """weights: (output steps, encoder frames); rows labelled with the emitted characters if given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = np.asarray(weights, dtype=np.float32)
    height = max(2.5, min(12.0, 0.12 * weights.shape[0] + 1.5))
    width = max(3.5, min(16.0, 0.08 * weights.shape[1] + 2.5))
    fig, ax = plt.subplots(figsize=(width, height), dpi=80)
    image = ax.imshow(weights, aspect="auto", origin="lower", interpolation="nearest", cmap="viridis",
                      vmin=0.0, vmax=max(1e-6, float(weights.max()) if weights.size else 1.0))
    ax.set_xlabel("encoder frame")
    ax.set_ylabel("output step")
    ax.set_title(title, fontsize=9)
    if output_labels is not None and len(output_labels) == weights.shape[0] and weights.shape[0] <= 80:
        ax.set_yticks(range(len(output_labels)))
        ax.set_yticklabels(["␣" if c == " " else c for c in output_labels], fontsize=6)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path


def plot_dev_attention(model, store, count: int, out_dir: Path, epoch: int, symbols: list[str],
                       max_length: int) -> list[Path]:
    """out_dir/attention/epochNNN-<utterance>.png for the first `count` dev utterances (greedy decoding, one at a
    time: no padding), on the model's device."""
    import torch

    from pipeline.decoding.attention_search import greedy_search, to_text

    device = next(model.parameters()).device
    paths = []
    for i in range(min(count, len(store))):
        x = torch.from_numpy(np.array(store.features(i), dtype=np.float32))[None].to(device)
        hypotheses, maps = greedy_search(model, x, torch.tensor([x.shape[1]], device=device), max_length,
                                         with_attention=True)
        text = to_text(hypotheses[0], symbols)
        labels = list(text) + ["<eos>"] if len(maps[0]) == len(text) + 1 else None
        paths.append(plot_attention(maps[0].numpy(), out_dir / "attention" / f"epoch{epoch:03d}-{store.ids[i]}.png",
                                    f"epoch {epoch}  {store.ids[i]}\n{text[:90]}", labels))
    return paths
