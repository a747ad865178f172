"""Teacher-forcing schedules (seed 001's rules; configured by TeacherForcingConfig in pipeline/tasks/seq2seq_recipe.py).

`next_rate(cfg, rate, epoch, dev_dist)` is called after epoch `epoch` (1-based) has been evaluated and returns
the rate for the next epoch; epoch 1 trains at `cfg.start`. A pure function of its arguments, so a resumed run
(which stores the current rate in last.pt) continues the same sequence.
"""
from __future__ import annotations

from pipeline.tasks.seq2seq_recipe import TeacherForcingConfig


def next_rate(cfg: TeacherForcingConfig, rate: float, epoch: int, dev_dist: float | None) -> float:
    if cfg.schedule == "constant" or rate <= cfg.floor:
        return rate
    if cfg.schedule == "linear":
        before_end = cfg.until_epoch is None or epoch <= cfg.until_epoch
        if epoch % cfg.every == 0 and before_end:
            return max(cfg.floor, round(rate - cfg.step, 10))
        return rate
    # decay: once the dev distance is good enough (or training is far enough along), shrink every epoch
    good = cfg.dist_threshold is not None and dev_dist is not None and dev_dist < cfg.dist_threshold
    late = cfg.after_epoch is not None and epoch > cfg.after_epoch
    return max(cfg.floor, rate * cfg.factor) if (good or late) else rate


def rates(cfg: TeacherForcingConfig, epochs: int, dev_dists: list[float | None] | None = None) -> list[float]:
    """The rate used in each of epochs 1..epochs, given each epoch's dev distance (None = not evaluated)."""
    dev_dists = dev_dists or [None] * epochs
    out, rate = [], cfg.start
    for epoch in range(1, epochs + 1):
        out.append(rate)
        rate = next_rate(cfg, rate, epoch, dev_dists[epoch - 1])
    return out
