"""Checkpoints: atomic writes, last.pt for resuming, top-k by dev metric with an index.json.

    out_dir/checkpoints/last.pt                 every epoch: model + optimizer/scheduler/scaler/RNG states
    out_dir/checkpoints/epoch012-lev3.41.pt     the k best by dev metric and the keep_last most recent epochs; model
                                                only (the name carries the metric's short tag: lev, acc, dist …)
    out_dir/checkpoints/index.json              {"metric", "direction", "keep_top_k", "keep_last",
                                                 "checkpoints": [{"file", "epoch", <metric>}, …] best first,
                                                 "recent": […] oldest first, "last": "last.pt"}
"""
from __future__ import annotations

import json
from pathlib import Path

import random

import numpy as np
import torch

from pipeline.errors import AsrpipeError
from pipeline.files import torch_save_atomic, write_json_atomic

METRIC = "dev_lev"



def atomic_write_json(path: Path, data) -> None:
    """The training run's JSON records (history.json, checkpoints/index.json, metrics.json): indent 1, no newline."""
    write_json_atomic(path, data, indent=1, newline=False, fsync=False)


def model_checkpoint(model: torch.nn.Module, model_cfg, epoch: int, metrics: dict, arch: str, **extra) -> dict:
    """What a checkpoint holds: enough to rebuild the model (pipeline/models/<arch>.py) and what it scored."""
    return {
        "model_arch": arch,
        "model_config": model_cfg.model_dump(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": epoch,
        "metrics": metrics,
        **extra,
    }


def load_checkpoint(path: str | Path) -> dict:
    # weights_only=False: last.pt holds numpy RNG state; our own files only.
    return torch.load(path, map_location="cpu", weights_only=False)


class CheckpointError(AsrpipeError, ValueError):
    """A checkpoint that cannot serve this run (one line naming the file)."""


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resume_from_last(last_path: Path, model_cfg, model, optimizer, schedule, scaler) -> dict | None:
    """Restore an interrupted run from last.pt (weights, optimizer, schedule, scaler, RNG) and return that
    checkpoint with `history`: the epochs of history.json it covers. None when there is nothing to resume."""
    if not last_path.exists():
        return None
    last = load_checkpoint(last_path)
    if last["model_config"] != model_cfg.model_dump():
        raise CheckpointError(f"{last_path}: written for another model config; use a fresh output directory")
    model.load_state_dict(last["state_dict"])
    optimizer.load_state_dict(last["optimizer"])
    schedule.load_state_dict(last["schedule"])
    if last["scaler"]:  # a run started without a GradScaler (CPU, bf16) saved an empty state
        scaler.load_state_dict(last["scaler"])
    set_rng_state(last["rng"])
    history_path = last_path.parent.parent / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else []
    last["history"] = [r for r in history if r["epoch"] <= last["epoch"]]
    return last


def save_last(checkpoint: dict, out_dir: Path, history: list, train_cfg, optimizer, schedule, scaler,
              train_seconds: float, wandb_id: str | None, **extra) -> None:
    """The end of every epoch: history.json, then last.pt (checkpoint + everything resume_from_last restores).
    In that order: a crash between the two leaves a history row too many, which resume drops, never one too few."""
    last = dict(checkpoint)
    last.update(train_config=train_cfg.model_dump(), optimizer=optimizer.state_dict(), schedule=schedule.state_dict(),
                scaler=scaler.state_dict(), rng=rng_state(), train_seconds=train_seconds, wandb_id=wandb_id, **extra)
    atomic_write_json(Path(out_dir) / "history.json", history)
    torch_save_atomic(last, Path(out_dir) / "checkpoints" / "last.pt")


class TopKKeeper:
    """Keeps the k checkpoints with the best dev metric (lowest, or highest for direction="max"; ties: the earlier
    epoch) and the `keep_last` most recent ones (for checkpoint averaging); a file in both lists is stored once."""

    def __init__(self, directory: Path, k: int, keep_last: int = 0, metric: str = METRIC, direction: str = "min",
                 tag: str = "lev"):
        self.directory, self.k, self.keep_last = directory, k, keep_last
        self.metric, self.direction, self.tag = metric, direction, tag
        self.directory.mkdir(parents=True, exist_ok=True)
        self.index_path = directory / "index.json"
        self.entries: list[dict] = []   # top-k, best first
        self.recent: list[dict] = []    # oldest first
        if self.index_path.exists():
            index = json.loads(self.index_path.read_text())
            exists = lambda e: (directory / e["file"]).exists()  # noqa: E731
            self.entries = [e for e in index["checkpoints"] if exists(e)]
            self.recent = [e for e in index.get("recent", []) if exists(e)]

    def drop_after(self, epoch: int) -> None:
        """Forget (and delete) checkpoints from epochs a resumed run is about to redo."""
        self.entries = [e for e in self.entries if e["epoch"] <= epoch]
        self.recent = [e for e in self.recent if e["epoch"] <= epoch]
        self._delete_unreferenced()
        self._write_index()

    def would_keep(self, value: float, epoch: int) -> bool:
        ranked = sorted(self.entries + [{"epoch": epoch, self.metric: value}], key=self._rank)
        return self.k > 0 and any(e["epoch"] == epoch for e in ranked[: self.k])

    def offer(self, checkpoint: dict, value: float | None, epoch: int) -> str | None:
        """Save the checkpoint if it ranks in the top k or is among the last `keep_last`; returns the file kept."""
        in_top_k = value is not None and self.would_keep(value, epoch)
        if not in_top_k and self.keep_last <= 0:
            return None
        name = f"epoch{epoch:03d}-{self.tag}{value:.2f}.pt" if value is not None else f"epoch{epoch:03d}.pt"
        torch_save_atomic(checkpoint, self.directory / name)
        entry = {"file": name, "epoch": epoch, self.metric: value}
        if in_top_k:
            self.entries = sorted(self.entries + [entry], key=self._rank)[: self.k]
        if self.keep_last > 0:
            self.recent = (self.recent + [entry])[-self.keep_last :]
        self._delete_unreferenced()
        self._write_index()
        return name

    def _rank(self, entry: dict) -> tuple:
        value = entry[self.metric]
        return (-value if self.direction == "max" else value, entry["epoch"])

    @property
    def best(self) -> dict | None:
        return self.entries[0] if self.entries else None

    def _delete_unreferenced(self) -> None:
        kept = {e["file"] for e in self.entries + self.recent}
        for path in self.directory.glob("epoch*.pt"):
            if path.name not in kept:
                path.unlink(missing_ok=True)

    def _write_index(self) -> None:
        atomic_write_json(self.index_path, {
            "metric": self.metric, "direction": self.direction, "keep_top_k": self.k, "keep_last": self.keep_last,
            "checkpoints": self.entries, "recent": self.recent, "last": "last.pt",
        })
