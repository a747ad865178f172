"""Optimizer and LR schedule for the hw1p2 frame trainer.

    warmup (optional): LinearLR from warmup_start_factor·lr to lr over warmup_epochs, stepped per batch
    then one of
      none          constant
      cosine        CosineAnnealingLR to min_lr over the remaining batches, per batch
      step          StepLR(step_size epochs, gamma), per epoch
      exponential   ExponentialLR(gamma), per epoch
      plateau       ReduceLROnPlateau on dev accuracy (mode "max"), per evaluated epoch — seed 000 chained
                    LinearLR into it: keep the LR high until learning stalls, then halve it
"""
from __future__ import annotations

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, ExponentialLR, LinearLR, ReduceLROnPlateau, StepLR

from pipeline.tasks.hw1p2_recipe import FrameSchedulerConfig, FrameTrainConfig


def build_optimizer(cfg: FrameTrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


class FrameSchedule:
    """step_batch() after every optimizer step, step_epoch(dev_acc) after every epoch; one state_dict."""

    def __init__(self, cfg: FrameSchedulerConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int):
        self.cfg = cfg
        total = max(1, steps_per_epoch * epochs)
        self.warmup_steps = min(round(cfg.warmup_epochs * steps_per_epoch), total - 1)
        self.total_steps, self.steps = total, 0
        self.epoch_warmed = False  # did this epoch run warmup steps (then the per-epoch schedule waits a round)
        self.warmup = (LinearLR(optimizer, start_factor=cfg.warmup_start_factor, total_iters=self.warmup_steps)
                       if self.warmup_steps else None)
        self.main = None
        if cfg.name == "cosine":
            self.main = CosineAnnealingLR(optimizer, T_max=max(1, total - self.warmup_steps), eta_min=cfg.min_lr)
        elif cfg.name == "step":
            self.main = StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
        elif cfg.name == "exponential":
            self.main = ExponentialLR(optimizer, gamma=cfg.gamma)
        elif cfg.name == "plateau":
            self.main = ReduceLROnPlateau(optimizer, mode="max", factor=cfg.factor, patience=cfg.patience,
                                          threshold=cfg.threshold, threshold_mode="abs", min_lr=cfg.min_lr)
        if self.warmup is not None and self.main is not None and not isinstance(self.main, ReduceLROnPlateau):
            # schedulers built after LinearLR reset the LR to lr; put the warmup's starting LR back
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * cfg.warmup_start_factor

    @property
    def warming_up(self) -> bool:
        return self.steps < self.warmup_steps

    def step_batch(self) -> None:
        if self.warming_up:
            self.epoch_warmed = True
            self.warmup.step()
        elif self.cfg.name == "cosine" and self.steps < self.total_steps:
            self.main.step()
        self.steps += 1

    def step_epoch(self, dev_acc: float | None) -> None:
        warmed, self.epoch_warmed = self.epoch_warmed, False
        if warmed or self.cfg.name in ("none", "cosine"):
            return
        if self.cfg.name == "plateau":
            if dev_acc is not None:
                self.main.step(dev_acc)
        else:
            self.main.step()

    def state_dict(self) -> dict:
        return {"steps": self.steps, "epoch_warmed": self.epoch_warmed, "warmup": self.warmup.state_dict() if self.warmup else None,
                "main": self.main.state_dict() if self.main else None}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.epoch_warmed = state["steps"], state["epoch_warmed"]
        if self.warmup:
            self.warmup.load_state_dict(state["warmup"])
        if self.main:
            self.main.load_state_dict(state["main"])
