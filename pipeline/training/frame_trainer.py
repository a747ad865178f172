"""HW1P2 frame-classification training: context windows gathered per batch from the memmap (FrameWindows),
cross-entropy, freq/time masking on the window, dev frame accuracy every epoch, top-k checkpoints by dev accuracy,
exact resume from last.pt, W&B tracking, float16 autocast on CUDA.

    metrics = train_frames(model_cfg, data_cfg, train_cfg, train_store, dev_store, out_dir, run_name=…, run_config=…)

out_dir/
    checkpoints/last.pt, checkpoints/epochNNN-accXX.XX.pt, checkpoints/index.json (metric dev_acc, direction max)
    history.json    per epoch: train_loss, train_acc, dev_loss, dev_acc (percent), lr, seconds
    metrics.json    the returned metrics
"""
from __future__ import annotations

import math
import queue
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.frames import FrameWindows
from pipeline.data.store import FeatureStore, open_store
from pipeline.errors import AsrpipeError
from pipeline.models.mlp import FrameMLP, count_parameters
from pipeline.progress import progress_bar
from pipeline.tasks.hw1p2_recipe import FrameDataConfig, FrameTrainConfig, MLPConfig
from pipeline.training.checkpoints import (
    TopKKeeper, atomic_write_json, model_checkpoint, resume_from_last, save_last,
)
from pipeline.training.frame_schedule import FrameSchedule, build_optimizer
from pipeline.training.specaugment import spec_augment
from pipeline.training.tracking import Tracker


class FrameTrainError(AsrpipeError, ValueError):
    pass


def check_compatible(cfg: MLPConfig, store: FeatureStore) -> None:
    if store.dim != cfg.input_dim:
        raise FrameTrainError(f"{store.path}: features have dim {store.dim}, model input_dim is {cfg.input_dim}")
    if len(store.symbols) != cfg.num_classes:
        raise FrameTrainError(f"{store.path}: {len(store.symbols)} symbols, model num_classes is {cfg.num_classes}")
    if not store.has_labels or store.meta.get("label_kind") != "frame":
        raise FrameTrainError(f"{store.path}: partition {store.meta.get('partition')!r} has no frame labels")


def autocast(device: torch.device, enabled: bool):
    return torch.autocast("cuda", dtype=torch.float16) if enabled and device.type == "cuda" else nullcontext()


def prefetched(batches, enabled: bool, depth: int = 3):
    """Gather the next batches in a thread while the GPU works (numpy's fancy-index copy releases the GIL)."""
    if not enabled:
        yield from batches
        return
    box: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def fill() -> None:
        try:
            for item in batches:
                box.put(item)
        finally:
            box.put(done)

    threading.Thread(target=fill, daemon=True).start()
    while (item := box.get()) is not done:
        yield item


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


@torch.inference_mode()
def evaluate(model: torch.nn.Module, windows: FrameWindows, batch_size: int, device: torch.device,
             amp: bool) -> dict:
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in windows.batches(batch_size, shuffle=False):
        x, y = to_tensors(x, y, device)
        with autocast(device, amp):
            logits = model(x)
        total_loss += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
        seen += len(y)
    return {"dev_loss": total_loss / max(1, seen), "dev_acc": 100.0 * correct / max(1, seen)}


def train_frames(model_cfg: MLPConfig, data_cfg: FrameDataConfig, train_cfg: FrameTrainConfig, train_store,
                 dev_store, out_dir: Path, *, tracking: str = "auto", run_name: str, run_config: dict,
                 progress: bool = True, stop_after_epoch: int | None = None) -> dict:
    """Train (or resume from out_dir/checkpoints/last.pt) and return the final metrics.

    stop_after_epoch: end this invocation after that epoch (the run stays resumable), e.g. to fit a session limit.
    """
    cfg = train_cfg
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    train_store, dev_store = open_store(train_store), open_store(dev_store)
    check_compatible(model_cfg, train_store)
    check_compatible(model_cfg, dev_store)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_amp = cfg.amp and device.type == "cuda"

    torch.manual_seed(cfg.seed)
    model = FrameMLP(model_cfg).to(device)
    n_params = count_parameters(model)
    if n_params != model_cfg.parameter_count():  # the planner's count is what the limit check trusted
        raise AssertionError(f"built {n_params} parameters, MLPConfig counts {model_cfg.parameter_count()}")
    optimizer = build_optimizer(cfg, model.parameters())
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    train_windows = FrameWindows(train_store, model_cfg.context, data_cfg.padding)
    dev_windows = FrameWindows(dev_store, model_cfg.context, data_cfg.padding)
    frames_per_epoch = max(1, round(len(train_windows) * data_cfg.subset))  # as FrameWindows.order draws them
    steps_per_epoch = math.ceil(frames_per_epoch / cfg.batch_size)
    schedule = FrameSchedule(cfg.scheduler, optimizer, steps_per_epoch, cfg.epochs)
    keeper = TopKKeeper(ckpt_dir, cfg.keep_top_k, cfg.keep_last, metric="dev_acc", direction="max", tag="acc")

    history, start_epoch, train_seconds, wandb_id = [], 1, 0.0, None
    last_path = ckpt_dir / "last.pt"
    last = resume_from_last(last_path, model_cfg, model, optimizer, schedule, scaler)
    if last:
        history, start_epoch = last["history"], last["epoch"] + 1
        train_seconds, wandb_id = last["train_seconds"], last.get("wandb_id")
        keeper.drop_after(last["epoch"])

    tracker = Tracker(tracking, out_dir, run_name, run_config, resume_id=wandb_id)
    say = print if progress else (lambda *_a, **_k: None)
    if start_epoch == 1:
        say(f"{run_name}: {n_params:,} parameters ({model_cfg.describe()}), "
            f"{model_cfg.macs_per_frame():,} MACs/frame, {frames_per_epoch:,} train / {len(dev_windows):,} dev "
            f"frames, {steps_per_epoch} batches per epoch, device {device}", flush=True)
    last_epoch = min(cfg.epochs, stop_after_epoch or cfg.epochs)
    window = 2 * model_cfg.context + 1
    for epoch in range(start_epoch, last_epoch + 1):
        t0 = time.time()
        model.train()
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        batches = train_windows.batches(cfg.batch_size, epoch=epoch, seed=cfg.seed, subset=data_cfg.subset)
        losses, correct, seen = [], 0, 0
        with progress_bar() as bar:
            task = bar.add_task(f"epoch {epoch}/{cfg.epochs}", total=steps_per_epoch)
            for x, y in prefetched(batches, device.type == "cuda"):
                x, y = to_tensors(x, y, device)
                x = mask_windows(x, window, cfg.masking, gen)
                optimizer.zero_grad(set_to_none=True)
                with autocast(device, use_amp):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                scaler.scale(loss).backward()
                if cfg.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                schedule.step_batch()
                losses.append(loss.item())
                correct += (logits.argmax(-1) == y).sum().item()
                seen += len(y)
                bar.advance(task)
        dev = {"dev_loss": None, "dev_acc": None}
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            dev = evaluate(model, dev_windows, cfg.eval_batch_size, device, use_amp)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "train_acc": 100.0 * correct / max(1, seen),
               **dev, "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.time() - t0, 2)}
        schedule.step_epoch(dev["dev_acc"])
        history.append(row)
        train_seconds += row["seconds"]
        save_epoch(model, model_cfg, data_cfg, cfg, optimizer, schedule, scaler, keeper, row, history, out_dir,
                   train_seconds, tracker.run_id)
        tracker.log({"train/loss": row["train_loss"], "train/acc": row["train_acc"], "dev/loss": dev["dev_loss"],
                     "dev/acc": dev["dev_acc"], "lr": row["lr"], "epoch_seconds": row["seconds"]}, step=epoch)
        say(epoch_summary(row, cfg.epochs), flush=True)

    metrics = final_metrics(history, keeper, ckpt_dir, n_params, model_cfg, train_seconds, device)
    atomic_write_json(out_dir / "metrics.json", metrics)
    tracker.finish({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    return metrics


def epoch_summary(row: dict, epochs: int) -> str:
    dev = "" if row["dev_acc"] is None else f"  dev_loss {row['dev_loss']:.3f}  dev_acc {row['dev_acc']:.2f}%"
    return (f"epoch {row['epoch']:3d}/{epochs}  train_loss {row['train_loss']:.3f}  train_acc {row['train_acc']:.2f}%"
            f"{dev}  lr {row['lr']:.2e}  {row['seconds']:.0f}s")


def save_epoch(model, model_cfg, data_cfg, cfg, optimizer, schedule, scaler, keeper, row, history, out_dir,
               train_seconds, wandb_id) -> None:
    metrics = {k: row[k] for k in ("train_loss", "train_acc", "dev_loss", "dev_acc")}
    checkpoint = model_checkpoint(model, model_cfg, row["epoch"], metrics, family="mlp")
    checkpoint["data"] = data_cfg.model_dump()  # decode reads the window padding from here (select copies it)
    keeper.offer(checkpoint, row["dev_acc"], row["epoch"])
    save_last(checkpoint, out_dir, history, cfg, optimizer, schedule, scaler, train_seconds, wandb_id)


def final_metrics(history, keeper, ckpt_dir, n_params, model_cfg, train_seconds, device) -> dict:
    evaluated = [r for r in history if r["dev_acc"] is not None]
    best = max(evaluated, key=lambda r: (r["dev_acc"], -r["epoch"])) if evaluated else None
    return {
        "best_dev_acc": best["dev_acc"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "best_checkpoint": str(ckpt_dir / keeper.best["file"]) if keeper.best else None,
        "epochs": history[-1]["epoch"] if history else 0,
        "final_train_loss": history[-1]["train_loss"] if history else None,
        "final_dev_acc": evaluated[-1]["dev_acc"] if evaluated else None,
        "train_seconds": round(train_seconds, 2),
        "params": n_params,
        "param_limit": model_cfg.param_limit,
        "macs_per_frame": model_cfg.macs_per_frame(),
        "hidden_widths": model_cfg.hidden_widths(),
        "device": device.type,
    }
