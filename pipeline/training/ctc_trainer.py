"""HW3P2 CTC training loop: bucketed batches, AdamW + warmup/cosine, SpecAugment, CTC loss, greedy dev Levenshtein,
top-k checkpoints, exact resume from last.pt, W&B tracking, DDP when launched under torchrun.

    metrics = train_ctc(model_cfg, train_cfg, train_store, dev_store, out_dir, run_name="…", run_config={…})

out_dir/
    checkpoints/last.pt, checkpoints/epochNNN-levX.XX.pt, checkpoints/index.json
    history.json    per epoch: train_loss, dev_loss, dev_lev, lr, seconds
    metrics.json    the returned metrics (written by rank 0)
    wandb/          when tracking is not "off"
"""
from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import Levenshtein
import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pipeline.data.store import FeatureStore, open_store
from pipeline.decoding.ctc_greedy import greedy_decode
from pipeline.models.ctc_rnn import build_model, count_parameters
from pipeline.tasks.hw3p2_recipe import CTCRNNConfig, CTCTrainConfig
from pipeline.training.batching import UtteranceDataset, collate_padded, epoch_batches, shard
from pipeline.training.checkpoints import (
    TopKKeeper, atomic_write_json, model_checkpoint, resume_from_last, save_last,
)
from pipeline.training.schedules import LRSchedule, build_optimizer
from pipeline.training.specaugment import spec_augment
from pipeline.training.tracking import Tracker

BLANK = 0


# ---- runtime context -----------------------------------------------------------------------------------------------

@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1

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
        return torch.autocast("cuda", dtype=torch.float16) if self.cuda else nullcontext()

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
    def detect(cls) -> "Runtime":
        if torch_dist.is_available() and torch_dist.is_initialized():
            rank, world = torch_dist.get_rank(), torch_dist.get_world_size()
            if torch.cuda.is_available():
                local = rank % torch.cuda.device_count()
                torch.cuda.set_device(local)
                return cls(torch.device("cuda", local), rank, world)
            return cls(torch.device("cpu"), rank, world)
        return cls(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


# ---- one batch, one epoch, evaluation -------------------------------------------------------------------------------

def ctc_loss(log_probs: torch.Tensor, out_lengths: torch.Tensor, y: torch.Tensor, y_lengths: torch.Tensor) -> torch.Tensor:
    # ctc_loss wants (T, B, C) and is unstable in fp16: always float32
    return F.ctc_loss(log_probs.transpose(0, 1).float(), y, out_lengths, y_lengths,
                      blank=BLANK, reduction="mean", zero_infinity=True)


def to_device(batch, rt: Runtime):
    return [t.to(rt.device, non_blocking=rt.cuda) for t in batch]


def train_step(model, batch, optimizer, scaler, cfg: CTCTrainConfig, rt: Runtime, gen: torch.Generator) -> float:
    x, y, x_lengths, y_lengths = batch
    x = spec_augment(x, x_lengths, cfg.specaugment, gen)
    x, y, x_lengths, y_lengths = to_device((x, y, x_lengths, y_lengths), rt)
    optimizer.zero_grad(set_to_none=True)
    with rt.autocast():
        log_probs, out_lengths = model(x, x_lengths)
    loss = ctc_loss(log_probs, out_lengths, y, y_lengths)
    scaler.scale(loss).backward()
    if cfg.grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.item()


def as_string(indices) -> str:
    """One character per class; any injective map gives the Levenshtein of the competition's single-char strings."""
    return "".join(chr(0x100 + int(i)) for i in indices)


@torch.no_grad()
def evaluate(model, loader, rt: Runtime) -> dict:
    model.eval()
    total_loss, total_dist, n_utts, n_batches = 0.0, 0, 0, 0
    for batch in loader:
        x, y, x_lengths, y_lengths = to_device(batch, rt)
        with rt.autocast():
            log_probs, out_lengths = model(x, x_lengths)
        total_loss += ctc_loss(log_probs, out_lengths, y, y_lengths).item()
        n_batches += 1
        for i, hyp in enumerate(greedy_decode(log_probs, out_lengths)):
            total_dist += Levenshtein.distance(as_string(y[i, : y_lengths[i]].tolist()), as_string(hyp))
            n_utts += 1
    return {"dev_loss": total_loss / max(1, n_batches), "dev_lev": total_dist / max(1, n_utts)}


# ---- state ----------------------------------------------------------------------------------------------------------

def check_compatible(model_cfg: CTCRNNConfig, store: FeatureStore) -> None:
    if store.dim != model_cfg.input_dim:
        raise ValueError(f"{store.path}: features have dim {store.dim}, model input_dim is {model_cfg.input_dim}")
    if len(store.symbols) != model_cfg.num_classes:
        raise ValueError(f"{store.path}: {len(store.symbols)} symbols, model num_classes is {model_cfg.num_classes}")
    if not store.has_labels:
        raise ValueError(f"{store.path}: partition {store.meta.get('partition')!r} has no labels to train on")


class Console:
    """Rich progress bar with ETA (TTY only) and one summary line per epoch; silent on ranks > 0."""

    def __init__(self, enabled: bool, show_bar: bool, epochs: int, first_epoch: int):
        self.enabled = enabled
        self.progress = None
        if enabled and show_bar and sys.stdout.isatty():
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
            self.progress.start()
            self.epochs_task = self.progress.add_task("epochs ", total=epochs, completed=first_epoch - 1, info="")
            self.batches_task = self.progress.add_task("batches", total=1, info="")

    def start_epoch(self, epoch: int, n_batches: int) -> None:
        if self.progress:
            self.progress.reset(self.batches_task, total=n_batches, description=f"epoch {epoch}", info="")

    def batch_done(self, loss: float) -> None:
        if self.progress:
            self.progress.update(self.batches_task, advance=1, info=f"loss {loss:.3f}")

    def line(self, text: str, epoch_done: bool = False) -> None:
        if not self.enabled:
            return
        if self.progress:
            self.progress.console.print(text)
            if epoch_done:
                self.progress.advance(self.epochs_task)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.progress:
            self.progress.stop()


def epoch_summary(row: dict, epochs: int) -> str:
    dev = "" if row["dev_lev"] is None else f"  dev_loss {row['dev_loss']:.3f}  dev_lev {row['dev_lev']:.2f}"
    return f"epoch {row['epoch']:3d}/{epochs}  train_loss {row['train_loss']:.3f}{dev}  lr {row['lr']:.2e}  {row['seconds']:.0f}s"


# ---- the loop -------------------------------------------------------------------------------------------------------

def train_ctc(model_cfg: CTCRNNConfig, train_cfg: CTCTrainConfig, train_store, dev_store, out_dir: Path, *,
              tracking: str = "auto", run_name: str, run_config: dict, progress: bool = True,
              stop_after_epoch: int | None = None) -> dict:
    """Train (or resume from out_dir/checkpoints/last.pt) and return the final metrics.

    stop_after_epoch: end this invocation after that epoch (the run stays resumable), e.g. to fit a session limit.
    """
    rt = Runtime.detect()
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    if rt.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    train_store, dev_store = open_store(train_store), open_store(dev_store)
    check_compatible(model_cfg, train_store)
    check_compatible(model_cfg, dev_store)
    cfg = train_cfg

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg).to(rt.device)
    n_params = count_parameters(model)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=rt.cuda)

    # every epoch's batch plan up front: the schedule knows its exact step count, resume sees the same batches
    lengths = train_store.lengths
    plans = [shard(epoch_batches(lengths, cfg.batch_size, cfg.max_frames_per_batch, cfg.seed, e), rt.rank, rt.world_size)
             for e in range(1, cfg.epochs + 1)]
    schedule = LRSchedule(cfg.scheduler, optimizer, steps_per_epoch=math.ceil(np.mean([len(p) for p in plans])),
                          total_steps=sum(len(p) for p in plans))

    keeper = TopKKeeper(ckpt_dir, cfg.keep_top_k, cfg.keep_last) if rt.is_main else None
    history, start_epoch, train_seconds, wandb_id = [], 1, 0.0, None
    last_path = ckpt_dir / "last.pt"
    rt.barrier()
    last = resume_from_last(last_path, model_cfg, model, optimizer, schedule, scaler)
    if last:
        history, start_epoch = last["history"], last["epoch"] + 1
        train_seconds, wandb_id = last["train_seconds"], last.get("wandb_id")
        if keeper:
            keeper.drop_after(last["epoch"])
    elif rt.distributed:
        torch.manual_seed(cfg.seed + 7919 * rt.rank)  # distinct dropout masks per rank

    net = model
    if rt.distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rt.device.index] if rt.cuda else None)

    dataset = UtteranceDataset(train_store)
    dev_loader = DataLoader(UtteranceDataset(dev_store), collate_fn=collate_padded, num_workers=cfg.num_workers,
                            pin_memory=rt.cuda,
                            batch_sampler=epoch_batches(dev_store.lengths, cfg.eval_batch_size, None, 0, 0, shuffle=False))
    dev_blank_lev = float(np.mean(np.diff(dev_store.label_offsets)))  # an empty hypothesis costs the target length

    tracker = Tracker(tracking if rt.is_main else "off", out_dir, run_name, run_config, resume_id=wandb_id)
    console = Console(rt.is_main, progress, cfg.epochs, start_epoch)
    if start_epoch == 1:
        console.line(f"{run_name}: {n_params:,} parameters, {len(train_store)} train / {len(dev_store)} dev utterances, "
                     f"{len(plans[0])} batches per epoch per rank, device {rt.device}, world size {rt.world_size}")
    last_epoch = min(cfg.epochs, stop_after_epoch or cfg.epochs)
    try:
        for epoch in range(start_epoch, last_epoch + 1):
            t0 = time.time()
            net.train()
            gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch * 10 + rt.rank)
            loader = DataLoader(dataset, batch_sampler=plans[epoch - 1], collate_fn=collate_padded,
                                num_workers=cfg.num_workers, pin_memory=rt.cuda)
            console.start_epoch(epoch, len(plans[epoch - 1]))
            losses = []
            for batch in loader:
                losses.append(train_step(net, batch, optimizer, scaler, cfg, rt, gen))
                schedule.step_batch()
                console.batch_done(losses[-1])
            train_loss = float(np.mean(losses)) if losses else float("nan")
            if rt.distributed:
                mean = torch.tensor([train_loss], dtype=torch.float64, device=rt.device)
                torch_dist.all_reduce(mean)
                train_loss = mean.item() / rt.world_size

            dev = {"dev_loss": None, "dev_lev": None}
            if rt.is_main and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
                dev = evaluate(model, dev_loader, rt)
            dev = rt.broadcast(dev)
            row = {"epoch": epoch, "train_loss": train_loss, **dev, "lr": optimizer.param_groups[0]["lr"],
                   "seconds": round(time.time() - t0, 2)}
            schedule.step_epoch(dev["dev_lev"])
            history.append(row)
            if rt.is_main:
                train_seconds += row["seconds"]
                save_epoch(model, model_cfg, cfg, optimizer, schedule, scaler, keeper, row, history, out_dir,
                           train_seconds, tracker.run_id)
                tracker.log({"train/loss": train_loss, "dev/loss": dev["dev_loss"], "dev/lev": dev["dev_lev"],
                             "lr": row["lr"], "epoch_seconds": row["seconds"]}, step=epoch)
                console.line(epoch_summary(row, cfg.epochs), epoch_done=True)
            rt.barrier()
    finally:
        console.close()

    metrics = final_metrics(history, keeper, ckpt_dir, n_params, rt, dev_blank_lev, train_seconds)
    if rt.is_main:
        atomic_write_json(out_dir / "metrics.json", metrics)
        tracker.finish({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    rt.barrier()
    return metrics


def save_epoch(model, model_cfg, cfg, optimizer, schedule, scaler, keeper, row, history, out_dir, train_seconds,
               wandb_id) -> None:
    metrics = {k: row[k] for k in ("train_loss", "dev_loss", "dev_lev")}
    keeper.offer(model_checkpoint(model, model_cfg, row["epoch"], metrics), row["dev_lev"], row["epoch"])
    save_last(model_checkpoint(model, model_cfg, row["epoch"], metrics), out_dir, history, cfg, optimizer, schedule,
              scaler, train_seconds, wandb_id)


def final_metrics(history, keeper, ckpt_dir, n_params, rt, dev_blank_lev, train_seconds) -> dict:
    evaluated = [r for r in history if r["dev_lev"] is not None]
    best = min(evaluated, key=lambda r: (r["dev_lev"], r["epoch"])) if evaluated else None
    return {
        "best_dev_lev": best["dev_lev"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "best_checkpoint": str(ckpt_dir / keeper.best["file"]) if keeper and keeper.best else None,
        "epochs": history[-1]["epoch"] if history else 0,
        "final_train_loss": history[-1]["train_loss"] if history else None,
        "final_dev_lev": evaluated[-1]["dev_lev"] if evaluated else None,
        "dev_blank_lev": dev_blank_lev,
        "train_seconds": round(train_seconds, 2),
        "params": n_params,
        "world_size": rt.world_size,
    }
