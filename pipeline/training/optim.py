"""The optimizer and learning-rate schedule of every family (keys: pipeline/tasks/train_recipe.py).

    warmup (optional)  LinearLR from warmup_start_factor·lr to lr over warmup_epochs, stepped per batch
    then one of
      none          constant
      cosine        CosineAnnealingLR to min_lr over the remaining batches, per batch (a 10-epoch CPU demo wants a
                    smooth curve, not a staircase)
      step          StepLR(step_size epochs, gamma), per epoch
      exponential   ExponentialLR(gamma), per epoch
      plateau       ReduceLROnPlateau on the family's dev metric in its direction, per evaluated epoch (seed 000
                    chained LinearLR into it: keep the LR high until learning stalls, then cut it)
step and exponential count the epochs after the warmup; plateau judges every evaluation once warmup has finished.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, ExponentialLR, LinearLR, ReduceLROnPlateau, StepLR

from pipeline.tasks.train_recipe import SchedulerConfig, TrainConfig


def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, momentum=cfg.momentum, nesterov=cfg.nesterov, **kwargs)
    optimizer = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "adamax": torch.optim.Adamax,
                 "adagrad": torch.optim.Adagrad}[cfg.optimizer]
    return optimizer(params, **kwargs)


class Schedule:
    """step_batch() after every optimizer step, step_epoch(dev_metric) after every epoch; one state_dict."""

    def __init__(self, cfg: SchedulerConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int | list[int],
                 total_steps: int, mode: str = "min"):
        """steps_per_epoch: one count for every epoch, or each epoch's own (a batch schedule changes them)."""
        self.cfg = cfg
        total = max(1, total_steps)
        self.warmup_steps = min(warmup_steps(cfg.warmup_epochs, steps_per_epoch), total - 1)
        self.total_steps, self.steps = total, 0
        self.epoch_warmed = False
        self.warmup = (LinearLR(optimizer, start_factor=cfg.warmup_start_factor, total_iters=self.warmup_steps)
                       if self.warmup_steps else None)
        self.main = None
        if cfg.name == "cosine":
            # never climb up to a min_lr above the LR (the LR before warmup scaled it down)
            floor = min(cfg.min_lr, min(group.get("initial_lr", group["lr"]) for group in optimizer.param_groups))
            self.main = CosineAnnealingLR(optimizer, T_max=max(1, total - self.warmup_steps), eta_min=floor)
        elif cfg.name == "step":
            self.main = StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
        elif cfg.name == "exponential":
            self.main = ExponentialLR(optimizer, gamma=cfg.gamma)
        elif cfg.name == "plateau":
            self.main = ReduceLROnPlateau(optimizer, mode=mode, factor=cfg.factor, patience=cfg.patience,
                                          threshold=cfg.threshold, threshold_mode=cfg.threshold_mode,
                                          min_lr=cfg.min_lr)
        if self.warmup is not None and self.main is not None and not isinstance(self.main, ReduceLROnPlateau):
            # a scheduler built after LinearLR resets the LR to lr: put the warmup's starting LR back
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * cfg.warmup_start_factor

    def step_batch(self) -> None:
        if self.steps < self.warmup_steps:
            self.epoch_warmed = True
            self.warmup.step()
        elif self.cfg.name == "cosine" and self.steps < self.total_steps:  # past the total, cosine would climb back
            self.main.step()
        self.steps += 1

    def step_epoch(self, dev_metric: float | None) -> None:
        warmed, self.epoch_warmed = self.epoch_warmed, False
        if self.cfg.name == "plateau":  # judged from the first evaluation after warmup has finished
            if dev_metric is not None and self.steps >= self.warmup_steps:
                self.main.step(dev_metric)
        elif self.cfg.name in ("step", "exponential") and not warmed:  # counts epochs after warmup
            self.main.step()

    def state_dict(self) -> dict:
        return {"steps": self.steps, "epoch_warmed": self.epoch_warmed,
                "warmup": self.warmup.state_dict() if self.warmup else None,
                "main": self.main.state_dict() if self.main else None}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.epoch_warmed = state["steps"], state["epoch_warmed"]
        if self.warmup:
            self.warmup.load_state_dict(state["warmup"])
        if self.main:
            self.main.load_state_dict(state["main"])


def warmup_steps(epochs: float, steps_per_epoch: int | list[int]) -> int:
    """Optimizer steps in the first `epochs` (fractional) epochs."""
    if isinstance(steps_per_epoch, int):
        return round(epochs * steps_per_epoch)
    whole = int(epochs)
    done = sum(steps_per_epoch[:whole])
    if whole < len(steps_per_epoch):
        done += (epochs - whole) * steps_per_epoch[whole]
    return round(done)


@contextmanager
def scaled_lr(optimizer: torch.optim.Optimizer, factor: float):
    """Step with every group's LR times `factor` (the batch schedule's √C rule), then put the scheduled LR back:
    the schedulers keep their own curve, and a resumed run recomputes the factor from the epoch."""
    if factor == 1.0:
        yield
        return
    scheduled = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] *= factor
    try:
        yield
    finally:
        for group, lr in zip(optimizer.param_groups, scheduled):
            group["lr"] = lr
