"""The one training loop of every family (ESPnet2's one trainer, small per-task classes).

A family supplies a TrainTask: its model, each epoch's batches, the loss of one batch and a dev evaluation that
returns its metric (name and direction). The loop owns everything else: device, AMP (float16 with a GradScaler or
bfloat16, CUDA only), DDP under torchrun (gloo on CPU, nccl on GPU), the optimizer and LR schedule, resume from
last.pt (RNG state included), top-k and last-N checkpoints, early stopping, the wall-clock budget, an epoch callback
that may stop the run, W&B, the progress UI, history.json and metrics.json.

    metrics = train(task, out_dir, tracking="off", run_name="demo", run_config={}, on_epoch=callback)

out_dir/
    checkpoints/last.pt                        every epoch: model + optimizer/schedule/scaler/RNG/family state
    checkpoints/epochNNN-<tag><value>.pt       top-k by the dev metric and the last keep_last epochs; index.json
    run.json        what is trained (metric, direction, arch, parameters); the train stage adds how it was asked
    history.json    per epoch: train_loss, the family's extra columns, dev_loss, <metric>, lr, seconds
    metrics.json    what train() returns (rank 0); `stop_reason` says why the loop ended:
                    completed | early_stopping | max_minutes | callback: … (and paused, for stop_after_epoch);
                    a run stopped by its recipe stays stopped, one stopped by a callback or paused resumes
    wandb/          when tracking is not "off"
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.distributed as torch_dist

from pipeline.errors import AsrpipeError
from pipeline.files import update_json_atomic
from pipeline.progress import EpochConsole
from pipeline.tasks.train_recipe import TrainConfig
from pipeline.training.checkpoints import TopKKeeper, atomic_write_json, model_checkpoint, resume_from_last, save_last
from pipeline.training.optim import Schedule, build_optimizer, scaled_lr
from pipeline.training.tracking import Tracker

# What an epoch callback returns: falsy to go on; True or a short reason to stop after this epoch.
EpochCallback = Callable[[dict], "bool | str | None"]


class TrainingError(AsrpipeError, RuntimeError):
    pass


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp: torch.dtype | None = None    # autocast dtype (CUDA only), None = full precision

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        return torch.autocast("cuda", dtype=self.amp) if self.amp is not None else nullcontext()

    def to_device(self, tensors):
        return [t.to(self.device, non_blocking=self.cuda) for t in tensors]

    def barrier(self) -> None:
        if self.distributed:
            torch_dist.barrier()

    def broadcast(self, value):
        """rank 0's value on every rank."""
        if not self.distributed:
            return value
        box = [value]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    @classmethod
    def detect(cls, cfg: TrainConfig | None = None) -> "Runtime":
        rank, world = 0, 1
        if torch_dist.is_available() and torch_dist.is_initialized():
            rank, world = torch_dist.get_rank(), torch_dist.get_world_size()
        device = torch.device("cpu")
        if torch.cuda.is_available():
            device = torch.device("cuda", rank % torch.cuda.device_count())
            torch.cuda.set_device(device)
        amp = None
        if device.type == "cuda" and cfg is not None and cfg.amp:
            amp = torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16
        return cls(device, rank, world, amp)


def check_store(store, dim: int, num_classes: int | None = None, label_kind: str = "sequence") -> None:
    """A store a task trains or evaluates on: the model's input width, its classes, labels of the right kind."""
    if store.dim != dim:
        raise TrainingError(f"{store.path}: features have dim {store.dim}, the model's input_dim is {dim}")
    if num_classes is not None and len(store.symbols) != num_classes:
        raise TrainingError(f"{store.path}: {len(store.symbols)} symbols, the model's num_classes is {num_classes}")
    if not store.has_labels or store.meta.get("label_kind") != label_kind:
        raise TrainingError(f"{store.path}: partition {store.meta.get('partition')!r} has no {label_kind} labels "
                            f"to train on")


class TrainTask:
    """What a family gives the loop. Set the class attributes; implement the methods that raise."""

    arch: str                    # pipeline/models/<arch>.py builds it again from the checkpoint (load_model)
    metric: str                  # the dev metric's column, e.g. "dev_lev"
    direction: str = "min"       # "min" or "max": which way is better
    tag: str = "dev"             # its short name in checkpoint file names (epoch012-lev3.41.pt)
    find_unused_parameters = False   # DDP: some parameters may get no gradient in a step
    warps = None                 # train.augment.freq_warp's maps (augment.load_warps), set by the family's make_task

    def __init__(self, model_cfg, cfg: TrainConfig):
        self.model_cfg, self.cfg = model_cfg, cfg

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def plan(self, epoch: int) -> list:
        """This epoch's batches (all ranks), as whatever `load` reads: utterance indices, frame indices …"""
        raise NotImplementedError

    def steps(self, epoch: int, world_size: int) -> int:
        """Batches one rank runs in `epoch` (the schedule's step count); override when plan() is costly."""
        return len(self.plan(epoch)) // world_size

    def load(self, batches: list, rt: Runtime) -> Iterable:
        raise NotImplementedError

    def loss(self, model, batch, rt: Runtime, gen: torch.Generator, epoch: int) -> torch.Tensor:
        """Forward one training batch (under autocast) and return the loss to minimize."""
        raise NotImplementedError

    def evaluate(self, model, rt: Runtime, epoch: int, out_dir: Path) -> dict:
        """{"dev_loss", <metric>, optionally "examples": [(ref, hyp)]}; runs on rank 0 only."""
        raise NotImplementedError

    # optional hooks ------------------------------------------------------------------------------------------------
    def describe(self, n_params: int) -> str:
        return f"{n_params:,} parameters"

    def lr_scale(self, epoch: int) -> float:
        """What the batch schedule (train.batch_schedule) multiplies the scheduled LR by in this epoch."""
        return self.cfg.lr_factor(epoch, self.cfg.batch_size) if self.cfg.batch_schedule else 1.0

    def start_epoch(self, epoch: int) -> None:
        pass

    def epoch_row(self) -> dict:
        """Extra history columns of the epoch just trained (e.g. train_acc, tf_rate)."""
        return {}

    def end_epoch(self, row: dict) -> None:
        """After the epoch's evaluation (e.g. the next teacher-forcing rate)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def checkpoint_extra(self) -> dict:
        return {}

    def final_metrics(self) -> dict:
        return {}

    def oom_message(self, batch) -> str:
        return "CUDA out of memory: lower the train batch size (see the recipe's train section)"


# ---- the loop -------------------------------------------------------------------------------------------------------

def train(task: TrainTask, out_dir: Path, *, tracking: str = "auto", run_name: str, run_config: dict | None = None,
          progress: bool = True, stop_after_epoch: int | None = None, on_epoch: EpochCallback | None = None) -> dict:
    """Train (or resume from out_dir/checkpoints/last.pt) and return the final metrics.

    stop_after_epoch: end this invocation after that epoch, the run staying resumable (stop_reason "paused").
    on_epoch: called on rank 0 with each epoch's history row; a truthy return stops the run after that epoch
    (stop_reason "callback: …"); run again, it goes on from there, unlike a run stopped by its own recipe.
    """
    cfg = task.cfg
    rt = Runtime.detect(cfg)
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    if rt.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    model = task.build_model().to(rt.device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = build_optimizer(cfg, model.parameters())
    scaler = torch.amp.GradScaler("cuda", enabled=rt.amp == torch.float16)
    steps = [task.steps(epoch, rt.world_size) for epoch in range(1, cfg.epochs + 1)]
    # warmup counts optimizer steps: a batch schedule changes them from epoch to epoch (without one, the mean keeps
    # the step counts every earlier run was trained with)
    per_epoch = steps if cfg.batch_schedule else int(np.ceil(np.mean(steps)))
    schedule = Schedule(cfg.scheduler, optimizer, steps_per_epoch=per_epoch, total_steps=sum(steps),
                        mode=task.direction)
    keeper = (TopKKeeper(ckpt_dir, cfg.keep_top_k, cfg.keep_last, metric=task.metric, direction=task.direction,
                         tag=task.tag) if rt.is_main else None)

    if rt.is_main:
        update_json_atomic(out_dir / "run.json", metric=task.metric, direction=task.direction, arch=task.arch,
                           params_count=n_params, epochs_planned=cfg.epochs)
    history, start_epoch, train_seconds, wandb_id, stop_reason = [], 1, 0.0, None, None
    rt.barrier()
    last = resume_from_last(ckpt_dir / "last.pt", task.model_cfg, model, optimizer, schedule, scaler)
    if last:
        if last.get("world_size", 1) != rt.world_size:  # the schedule's step counts depend on it
            raise TrainingError(f"{ckpt_dir / 'last.pt'}: trained with {last.get('world_size', 1)} process(es); "
                                f"resume with --nproc {last.get('world_size', 1)}, or --force to start over")
        history, start_epoch = last["history"], last["epoch"] + 1
        train_seconds, wandb_id, stop_reason = last["train_seconds"], last.get("wandb_id"), last.get("stop_reason")
        if stop_reason and stop_reason.startswith("callback"):  # stopped from outside (a sweep's pruner): goes on
            stop_reason = None
        task.load_state_dict(last.get("task_state", {}))
        if keeper:
            keeper.drop_after(last["epoch"])
    if rt.distributed:  # distinct dropout masks per rank (last.pt holds rank 0's RNG state only)
        torch.manual_seed(cfg.seed + 7919 * rt.rank + 104729 * (start_epoch - 1))

    net = model
    if rt.distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rt.device.index] if rt.cuda else None,
                                                        find_unused_parameters=task.find_unused_parameters)
    tracker = Tracker(tracking if rt.is_main else "off", out_dir, run_name, run_config or {}, resume_id=wandb_id)
    console = EpochConsole(rt.is_main, progress, cfg.epochs, start_epoch)
    if start_epoch == 1:
        console.line(f"{run_name}: {task.describe(n_params)}, {steps[0]} batches per epoch per rank, "
                     f"device {rt.device}{' amp ' + str(rt.amp).replace('torch.', '') if rt.amp else ''}, "
                     f"world size {rt.world_size}")
    last_epoch = min(cfg.epochs, stop_after_epoch or cfg.epochs)
    try:
        for epoch in range(start_epoch, last_epoch + 1):
            if stop_reason:
                break
            budget_s = 60 * cfg.max_minutes - train_seconds if cfg.max_minutes is not None else None
            row, examples = run_epoch(task, net, model, optimizer, scaler, schedule, rt, console, epoch, out_dir,
                                      last_epoch=epoch == last_epoch, budget_s=budget_s)
            history.append(row)
            if rt.is_main:
                train_seconds += row["seconds"]
                stop_reason = should_stop(task, history, train_seconds, on_epoch)
            stop_reason = rt.broadcast(stop_reason)
            if rt.is_main:
                checkpoint = model_checkpoint(model, task.model_cfg, epoch, metrics_of(row), task.arch,
                                              **task.checkpoint_extra())
                keeper.offer(checkpoint, row[task.metric], epoch)
                save_last(checkpoint, out_dir, history, cfg, optimizer, schedule, scaler, train_seconds,
                          tracker.run_id, task_state=task.state_dict(), stop_reason=stop_reason,
                          world_size=rt.world_size)
                tracker.log(wandb_row(row), step=epoch)
                console.line(summary_line(row, cfg.epochs), epoch_done=True)
                for ref, hyp in examples[:1]:
                    console.line(f"      ref: {ref}\n      hyp: {hyp}")
                if stop_reason:
                    console.line(f"stopping after epoch {epoch}: {stop_reason}")
            rt.barrier()
    finally:
        console.close()

    if stop_reason is None:
        stop_reason = "completed" if (history and history[-1]["epoch"] >= cfg.epochs) else "paused"
    metrics = final_metrics(task, history, keeper, ckpt_dir, n_params, rt, train_seconds, stop_reason)
    if rt.is_main:
        atomic_write_json(out_dir / "metrics.json", metrics)
        tracker.finish({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    rt.barrier()
    return metrics


def run_epoch(task: TrainTask, net, model, optimizer, scaler, schedule: Schedule, rt: Runtime,
              console: EpochConsole, epoch: int, out_dir: Path, last_epoch: bool = False,
              budget_s: float | None = None) -> tuple[dict, list]:
    """One epoch of training, then the dev evaluation: the history row and a few dev examples. Evaluated every
    eval_every epochs, and always on the last epoch of the run or of this invocation, and on the epoch that uses up
    the time budget, so that the epoch a run stops after is scored and can be kept."""
    cfg, t0 = task.cfg, time.time()
    net.train()
    task.start_epoch(epoch)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch * 10 + rt.rank)
    lr_scale = task.lr_scale(epoch)
    batches = shard(task.plan(epoch), rt.rank, rt.world_size)
    console.start_epoch(epoch, len(batches))
    losses = []
    for batch in task.load(batches, rt):
        optimizer.zero_grad(set_to_none=True)
        try:
            with rt.autocast():
                loss = task.loss(net, batch, rt, gen, epoch)
            scaler.scale(loss).backward()
        except torch.cuda.OutOfMemoryError:
            raise TrainingError(task.oom_message(batch)) from None
        if cfg.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        with scaled_lr(optimizer, lr_scale):
            scaler.step(optimizer)
        scaler.update()
        schedule.step_batch()
        losses.append(loss.item())
        console.batch_done(losses[-1])
    train_loss = float(np.mean(losses)) if losses else float("nan")
    if rt.distributed:
        mean = torch.tensor([train_loss], dtype=torch.float64, device=rt.device)
        torch_dist.all_reduce(mean)
        train_loss = mean.item() / rt.world_size

    dev = {"dev_loss": None, task.metric: None}
    out_of_time = budget_s is not None and time.time() - t0 >= budget_s
    if rt.is_main and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs or last_epoch or out_of_time):
        model.eval()
        dev = task.evaluate(model, rt, epoch, out_dir)
        model.train()
    dev = rt.broadcast(dev)
    examples = dev.pop("examples", [])
    row = {"epoch": epoch, "train_loss": train_loss, **task.epoch_row(), **dev,
           "lr": optimizer.param_groups[0]["lr"] * lr_scale, "seconds": round(time.time() - t0, 2)}
    schedule.step_epoch(row[task.metric])
    task.end_epoch(row)
    return row, examples


def shard(batches: list, rank: int, world_size: int) -> list:
    """Disjoint, equal-sized share of the batches for one DDP rank (the remainder is dropped)."""
    usable = len(batches) - len(batches) % world_size
    return batches[rank:usable:world_size]


def better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "max" else a < b


def patience_exhausted(values: list[float], patience: int | None, direction: str) -> bool:
    """No evaluation among the last `patience` beat the best one before them."""
    if not patience or len(values) <= patience:
        return False
    best = max if direction == "max" else min
    return not better(best(values[-patience:]), best(values[:-patience]), direction)


def should_stop(task: TrainTask, history: list[dict], train_seconds: float,
                on_epoch: EpochCallback | None) -> str | None:
    cfg = task.cfg
    if on_epoch is not None:
        asked = on_epoch(dict(history[-1]))
        if asked:
            return f"callback: {asked}" if isinstance(asked, str) else "callback"
    evaluated = [r[task.metric] for r in history if r[task.metric] is not None]
    if patience_exhausted(evaluated, cfg.early_stopping, task.direction):
        return "early_stopping"
    if cfg.max_minutes is not None and train_seconds >= 60 * cfg.max_minutes and history[-1]["epoch"] < cfg.epochs:
        return "max_minutes"
    return None


def metrics_of(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("epoch", "lr", "seconds")}


def wandb_row(row: dict) -> dict:
    """history columns as W&B keys: train_loss → train/loss, dev_lev → dev/lev, seconds → epoch_seconds."""
    logged = {}
    for key, value in metrics_of(row).items():
        split, _, name = key.partition("_")
        logged[f"{split}/{name}" if split in ("train", "dev") and name else key] = value
    return {**logged, "lr": row["lr"], "epoch_seconds": row["seconds"]}


def summary_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']:3d}/{epochs}"]
    for key, value in metrics_of(row).items():
        if isinstance(value, float):
            parts.append(f"{key} {value:.3f}" if key.endswith("loss") else f"{key} {value:.2f}")
    return "  ".join(parts + [f"lr {row['lr']:.2e}", f"{row['seconds']:.0f}s"])


def final_metrics(task: TrainTask, history: list[dict], keeper: TopKKeeper | None, ckpt_dir: Path, n_params: int,
                  rt: Runtime, train_seconds: float, stop_reason: str) -> dict:
    metric = task.metric
    evaluated = [r for r in history if r[metric] is not None]
    sign = -1 if task.direction == "max" else 1
    best = min(evaluated, key=lambda r: (sign * r[metric], r["epoch"])) if evaluated else None
    return {
        f"best_{metric}": best[metric] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "best_checkpoint": str(ckpt_dir / keeper.best["file"]) if keeper and keeper.best else None,
        "epochs": history[-1]["epoch"] if history else 0,
        "epochs_planned": task.cfg.epochs,
        "stop_reason": stop_reason,
        "final_train_loss": history[-1]["train_loss"] if history else None,
        f"final_{metric}": evaluated[-1][metric] if evaluated else None,
        "train_seconds": round(train_seconds, 2),
        "params": n_params,
        "device": rt.device.type,
        "amp": str(rt.amp).replace("torch.", "") if rt.amp else None,
        "world_size": rt.world_size,
        "quick": task.cfg.quick,
        **task.final_metrics(),
    }
