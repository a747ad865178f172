"""hw1p2 (frames) for the training loop: context windows gathered per batch from the memmap (FrameWindows),
cross-entropy with label smoothing, freq/time masking on each window, speed perturbation (each window's context read
at a drawn speed) and feature noise, dev frame accuracy (percent, higher is better).

    metrics = train(FramesTask(model_cfg, data_cfg, train_cfg, train_store, dev_store), out_dir, run_name="…")
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.frames import FrameWindows, prefetched
from pipeline.data.store import FeatureStore, open_store
from pipeline.tasks.frames_recipe import FrameDataConfig, FrameTrainConfig, MLPConfig
from pipeline.training.batching import quick_subset
from pipeline.training.loop import Runtime, TrainTask, check_store
from pipeline.training.augment import add_noise, freq_warp, load_warps
from pipeline.training.specaugment import spec_augment


def to_tensors(x: np.ndarray, y: np.ndarray | None, device: torch.device):
    cuda = device.type == "cuda"
    x = torch.from_numpy(x)
    x = (x.pin_memory() if cuda else x).to(device, non_blocking=cuda)
    if y is not None:
        y = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device, non_blocking=cuda)
    return x, y


def mask_windows(x: torch.Tensor, window: int, cfg, gen: torch.Generator) -> torch.Tensor:
    """Frequency and time masks on each (2c+1, F) window (seed 000: each with probability 0.5)."""
    if not cfg.enabled:
        return x
    frames = x.view(len(x), window, -1)
    lengths = torch.full((len(x),), window, dtype=torch.long)
    return spec_augment(frames, lengths, cfg, gen).reshape(len(x), -1)


class FramesTask(TrainTask):
    arch, metric, direction, tag = "mlp", "dev_acc", "max", "acc"

    def __init__(self, model_cfg: MLPConfig, data_cfg: FrameDataConfig, cfg: FrameTrainConfig, train_store,
                 dev_store):
        super().__init__(model_cfg, cfg)
        self.data_cfg = data_cfg
        train_store, dev_store = open_store(train_store), open_store(dev_store)
        for store in (train_store, dev_store):
            check_store(store, model_cfg.input_dim, model_cfg.num_classes, label_kind="frame")
        self.train_windows = FrameWindows(train_store, model_cfg.context, data_cfg.padding)
        self.dev_windows = FrameWindows(dev_store, model_cfg.context, data_cfg.padding)
        utterances = quick_subset(len(train_store), cfg.quick, cfg.seed)
        self.among = None if utterances is None else self.train_windows.utterance_frames(utterances)
        usable = len(self.train_windows) if self.among is None else len(self.among)
        self.frames_per_epoch = max(1, round(usable * data_cfg.subset))  # as order() draws them
        self.correct = self.seen = 0
        self.epoch = 0

    def build_model(self):
        from pipeline.models.mlp import FrameMLP

        model = FrameMLP(self.model_cfg)
        built = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if built != self.model_cfg.parameter_count():  # the planner's count is what the limit check trusted
            raise AssertionError(f"built {built} parameters, MLPConfig counts {self.model_cfg.parameter_count()}")
        return model

    def describe(self, n_params: int) -> str:
        return (f"{n_params:,} parameters ({self.model_cfg.describe()}), {self.model_cfg.macs_per_frame():,} "
                f"MACs/frame, {self.frames_per_epoch:,} train / {len(self.dev_windows):,} dev frames")

    def plan(self, epoch: int) -> list:
        order = self.train_windows.order(epoch, self.cfg.seed, self.data_cfg.subset, among=self.among)
        size = self.cfg.batch_size_at(epoch, self.cfg.batch_size)
        return [np.sort(order[i : i + size]) for i in range(0, len(order), size)]

    def steps(self, epoch: int, world_size: int) -> int:
        return math.ceil(self.frames_per_epoch / self.cfg.batch_size_at(epoch, self.cfg.batch_size)) // world_size

    def load(self, batches: list, rt: Runtime):
        gathered = ((self.train_windows.gather(f, self.speeds(i, len(f))), self.train_windows.labels(f))
                    for i, f in enumerate(batches))
        return prefetched(gathered, rt.cuda)

    def speeds(self, batch: int, size: int) -> np.ndarray | None:
        """Each window's speed factor (train.augment.speed), seeded by (seed, epoch, batch): the prefetch thread
        draws them, so not from the loop's generator."""
        factors = self.cfg.augment.speed
        if not factors or all(f == 1.0 for f in factors):
            return None
        return np.random.default_rng([self.cfg.seed, self.epoch, batch]).choice(np.asarray(factors), size)

    def start_epoch(self, epoch: int) -> None:
        self.correct = self.seen = 0
        self.epoch = epoch

    def loss(self, model, batch, rt: Runtime, gen: torch.Generator, epoch: int) -> torch.Tensor:
        x, y = to_tensors(*batch, rt.device)
        window = 2 * self.model_cfg.context + 1
        x = freq_warp(x.view(len(x), window, -1), self.warps, gen).reshape(len(x), -1)
        x = mask_windows(x, window, self.cfg.masking, gen)
        x = add_noise(x[:, None, :], torch.ones(len(x), dtype=torch.long), self.cfg.augment.noise_std, gen)[:, 0]
        logits = model(x)
        self.correct += (logits.argmax(-1) == y).sum().item()
        self.seen += len(y)
        return F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.label_smoothing)

    def epoch_row(self) -> dict:
        return {"train_acc": 100.0 * self.correct / max(1, self.seen)}

    @torch.inference_mode()
    def evaluate(self, model, rt: Runtime, epoch: int, out_dir: Path) -> dict:
        total_loss, correct, seen = 0.0, 0, 0
        for x, y in self.dev_windows.batches(self.cfg.eval_batch_size, shuffle=False):
            x, y = to_tensors(x, y, rt.device)
            with rt.autocast():
                logits = model(x)
            total_loss += F.cross_entropy(logits.float(), y, reduction="sum").item()
            correct += (logits.argmax(-1) == y).sum().item()
            seen += len(y)
        return {"dev_loss": total_loss / max(1, seen), "dev_acc": 100.0 * correct / max(1, seen)}

    def checkpoint_extra(self) -> dict:
        return {"data": self.data_cfg.model_dump()}  # decode reads the window padding from here (select copies it)

    def final_metrics(self) -> dict:
        cfg = self.model_cfg
        return {"param_limit": cfg.param_limit, "macs_per_frame": cfg.macs_per_frame(),
                "hidden_widths": cfg.hidden_widths()}

    def oom_message(self, batch) -> str:
        return f"CUDA out of memory on a batch of {len(batch[0])} frames: lower train.batch_size"


TASK = FramesTask  # what the family trains: its metric and direction (a sweep reads them)


def make_task(params: dict, normalized: str, train_store: str | None = None, **_) -> FramesTask:
    normalized = Path(normalized)
    task = FramesTask(MLPConfig(**params["model"]), FrameDataConfig(**params["data"]),
                      FrameTrainConfig(**params["train"]), FeatureStore.open(train_store or normalized / "train"),
                      FeatureStore.open(normalized / "dev"))
    task.warps = load_warps(task.cfg.augment, normalized)
    return task
