"""Optimizer and learning-rate schedule.

The LR moves every optimizer step (a 10-epoch CPU demo needs a smooth warmup, not a 1-epoch staircase):
    cosine:  LinearLR warmup → CosineAnnealingLR to min_lr, chained by SequentialLR
    none:    LinearLR warmup → constant
    plateau: LinearLR warmup per step, then ReduceLROnPlateau on the dev metric once per evaluated epoch
"""
from __future__ import annotations


import torch
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, ReduceLROnPlateau, SequentialLR

from pipeline.tasks.hw3p2_recipe import SchedulerConfig


def build_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


class LRSchedule:
    """One object to step per batch and per epoch, with a single state_dict for checkpoints."""

    def __init__(self, cfg: SchedulerConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int, total_steps: int):
        self.cfg = cfg
        total_steps = max(1, total_steps)
        self.warmup_steps = min(round(cfg.warmup_epochs * steps_per_epoch), total_steps - 1)
        self.total_steps = total_steps
        self.steps = 0
        warmup = None
        if self.warmup_steps:
            warmup = LinearLR(optimizer, start_factor=cfg.warmup_start_factor, total_iters=self.warmup_steps)
        self.plateau = None
        if cfg.name == "plateau":
            self.per_step = warmup
            self.plateau = ReduceLROnPlateau(optimizer, mode="min", factor=cfg.factor, patience=cfg.patience,
                                             min_lr=cfg.min_lr)
            return
        if cfg.name == "cosine":
            main = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - self.warmup_steps), eta_min=cfg.min_lr)
        else:
            main = ConstantLR(optimizer, factor=1.0, total_iters=0)
        self.per_step = SequentialLR(optimizer, [warmup, main], milestones=[self.warmup_steps]) if warmup else main

    def step_batch(self) -> None:
        # never run past the planned total (CosineAnnealingLR would climb back up)
        limit = self.warmup_steps if self.plateau is not None else self.total_steps
        if self.per_step is not None and self.steps < limit:
            self.per_step.step()
        self.steps += 1

    def step_epoch(self, dev_metric: float | None) -> None:
        if self.plateau is not None and dev_metric is not None and self.steps >= self.warmup_steps:
            self.plateau.step(dev_metric)

    def state_dict(self) -> dict:
        return {
            "steps": self.steps,
            "per_step": self.per_step.state_dict() if self.per_step is not None else None,
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        if self.per_step is not None:
            self.per_step.load_state_dict(state["per_step"])
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])
