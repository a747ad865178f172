"""The `train:` keys every family shares (pipeline/training/loop.py reads them): optimizer, LR schedule, AMP,
checkpoints, evaluation cadence, early stopping, a wall-clock budget. Each family's train config subclasses
TrainConfig and adds its own batching and loss keys; a family may change a default, never a key's meaning.

Torch-free, like every recipe schema, so that planning (`asrpipe status`, a cached run) stays fast.

    optimizer   adamw | adam | adamax | adagrad | sgd (momentum, nesterov)
    scheduler   optional LinearLR warmup (per batch), then none | cosine (per batch) | step | exponential (per epoch)
                | plateau (ReduceLROnPlateau on the family's dev metric, its direction from the family)
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SchedulerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["none", "cosine", "step", "exponential", "plateau"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0.0)          # LinearLR from warmup_start_factor·lr to lr, per batch
    warmup_start_factor: float = Field(0.05, gt=0.0, le=1.0)
    min_lr: float = Field(1e-5, ge=0.0)                # cosine floor, plateau floor
    step_size: int = Field(5, ge=1)                    # step: epochs between decays
    gamma: float = Field(0.5, gt=0.0, le=1.0)          # step / exponential: factor per step_size / per epoch
    factor: float = Field(0.5, gt=0.0, lt=1.0)         # plateau
    patience: int = Field(2, ge=0)                     # plateau, in evaluated epochs
    threshold: float = Field(1e-4, ge=0.0)             # plateau: the gain that counts as better
    threshold_mode: Literal["rel", "abs"] = "rel"


class SpecAugmentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    freq_mask: int = 0   # max band width (features); 0 = off
    time_mask: int = 0   # max span width (frames); 0 = no cap in frames (time_mask_ratio alone sizes it)
    time_mask_ratio: float = Field(0.0, ge=0.0, le=1.0)  # Park et al.'s p: a span ≤ this share of its utterance
    n_freq: int = 1
    n_time: int = 1
    p_freq: float = 1.0
    p_time: float = 1.0
    time_warp: int = Field(0, ge=0)  # W: warp a point by up to W frames (whole utterances only); 0 = off

    @property
    def time_masks(self) -> bool:
        return (self.time_mask > 0 or self.time_mask_ratio > 0) and self.n_time > 0 and self.p_time > 0

    @property
    def enabled(self) -> bool:
        return (self.freq_mask > 0 and self.n_freq > 0 and self.p_freq > 0) or self.time_masks


class AugmentConfig(BaseModel):
    """Feature-level augmentation besides SpecAugment (pipeline/training/augment.py)."""
    model_config = ConfigDict(extra="forbid")

    speed: list[float] = Field(default_factory=list)  # e.g. [0.9, 1.0, 1.1]: one drawn per utterance; [] = off
    noise_std: float = Field(0.0, ge=0.0)              # additive Gaussian noise on the (normalized) features
    freq_warp: float = Field(0.0, ge=0.0, le=0.3)      # r: the mel axis scaled by a factor from [1-r, 1+r] (VTLP)
    mel_bands: int = Field(40, ge=1)                   # MFCC only: the mel bands the cepstra were computed from

    @model_validator(mode="after")
    def _check(self) -> "AugmentConfig":
        if any(not 0.5 <= factor <= 2.0 for factor in self.speed):
            raise ValueError(f"speed factors must lie in [0.5, 2] (got {self.speed})")
        return self


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(50, ge=1)
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(1e-2, ge=0.0)
    optimizer: Literal["adamw", "adam", "adamax", "adagrad", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)      # sgd
    nesterov: bool = False                            # sgd
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    grad_clip: float | None = Field(5.0, gt=0.0)      # max grad norm; None = off
    amp: bool = True                                  # mixed precision, CUDA only
    amp_dtype: Literal["float16", "bfloat16"] = "float16"   # float16 uses a GradScaler; bfloat16 needs none
    keep_top_k: int = Field(3, ge=0)
    keep_last: int = Field(0, ge=0)                   # also keep the last N epochs' weights (checkpoint averaging)
    eval_every: int = Field(1, ge=1)                  # epochs; the last epoch is always evaluated
    early_stopping: int | None = Field(None, ge=1)    # stop after this many evaluations without a better dev metric
    max_minutes: float | None = Field(None, gt=0.0)   # wall-clock budget: stop after the epoch that crosses it
    seed: int = 11785
    num_workers: int = Field(0, ge=0)
    # a quick ablation (`--quick`): train on this fixed fraction of the training utterances, the same ones every
    # epoch and every run with the same seed; None = all of them
    quick: float | None = Field(None, gt=0.0, le=1.0)
    # [[epoch, batch size], ...]: from that epoch on (0-based: [0, 32] is the first epoch) batches of that size;
    # before the first entry, the family's batch size. seed 003: large batches first, then fine-tune on small ones
    batch_schedule: list[tuple[int, int]] | None = None
    # the LR at batch size B is lr · sqrt(B / the family's batch size) (seed 003's √C rule), or lr unchanged
    batch_lr_scaling: Literal["sqrt", "none"] = "sqrt"
    # "train+dev": the final fit (a common last Kaggle step): the chosen recipe retrained on train and dev together
    # for train.epochs (set it to the best epoch of the run it repeats). Dev figures then score seen data; the
    # held-out set (where the profile has one) and the leaderboard still judge it.
    fit_on: Literal["train", "train+dev"] = "train"

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer sgd with momentum > 0")
        if self.batch_schedule is not None:
            starts = [epoch for epoch, _ in self.batch_schedule]
            if not starts or starts != sorted(set(starts)) or starts[0] < 0:
                raise ValueError(f"batch_schedule must list [epoch, batch size] pairs with increasing epochs from 0 "
                                 f"(got {self.batch_schedule})")
            if any(size < 1 for _, size in self.batch_schedule):
                raise ValueError(f"batch_schedule: batch sizes must be >= 1 (got {self.batch_schedule})")
        return self

    def batch_size_at(self, epoch: int, base: int) -> int:
        """The batch size of 1-based `epoch` when the family's own batch size is `base`."""
        size = base
        for start, scheduled in self.batch_schedule or ():
            if epoch - 1 >= start:
                size = scheduled
        return size

    def lr_factor(self, epoch: int, base: int) -> float:
        """What the batch schedule multiplies the scheduled LR by in 1-based `epoch`."""
        if self.batch_lr_scaling == "none":
            return 1.0
        return (self.batch_size_at(epoch, base) / base) ** 0.5


def run_label(train: dict) -> str:
    """What the train output folder's name adds after the epochs: a time budget (a budget-stopped run is its own
    artifact), a final fit on train+dev, and a quick ablation's fraction, so that none ever looks like, or shadows, a
    plain full run."""
    budget = f"-t{train['max_minutes']:g}m" if train.get("max_minutes") else ""
    fit = "-final-fit" if train.get("fit_on") == "train+dev" else ""
    return budget + fit + (f"-quick{train['quick']:g}" if train.get("quick") else "")
