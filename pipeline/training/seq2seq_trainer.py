"""HW4P2 attention training loop (LAS or Transformer): memory-aware batches, teacher-forcing schedule,
cross-entropy (PAD ignored, optional label smoothing) + optional CTC auxiliary loss, SpecAugment, ReduceLROnPlateau
or cosine, early stopping, greedy dev distance, attention plots, top-k checkpoints, exact resume from last.pt.

    metrics = train_seq2seq(model_cfg, train_cfg, train_store, dev_store, out_dir, symbols=[…], metric="levenshtein")

out_dir/
    checkpoints/last.pt, checkpoints/epochNNN-distX.XX.pt, checkpoints/index.json (metric dev_dist, min)
    attention/epochNNN-<utterance>.png   greedy-decode attention of the first dev utterances, every evaluated epoch
    history.json    per epoch: train_loss, dev_loss, dev_dist, tf_rate, lr, seconds
    metrics.json    the returned metrics
    wandb/          when tracking is not "off"
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pipeline.data.store import FeatureStore, open_store
from pipeline.decoding.attention_search import greedy_search
from pipeline.decoding.metrics import cer, levenshtein_mean
from pipeline.errors import AsrpipeError
from pipeline.tasks.hw4p2_recipe import LASConfig, Seq2SeqTrainConfig, TransformerConfig
from pipeline.training.attention_plots import plot_attention
from pipeline.training.checkpoints import TopKKeeper, atomic_write_json, model_checkpoint
from pipeline.training.checkpoints import resume_from_last, save_last
from pipeline.training.ctc_trainer import Console, Runtime
from pipeline.training.length_batching import Seq2SeqCollate, Seq2SeqDataset, budget_batches, oversized
from pipeline.training.schedules import LRSchedule, build_optimizer
from pipeline.training.specaugment import spec_augment
from pipeline.training.teacher_forcing import next_rate
from pipeline.training.tracking import Tracker

METRIC, TAG = "dev_dist", "dist"


class TrainingError(AsrpipeError, RuntimeError):
    pass


def build_model(cfg: LASConfig | TransformerConfig) -> torch.nn.Module:
    if cfg.family == "las":
        from pipeline.models.las import LAS

        return LAS(cfg)
    from pipeline.models.transformer import Transformer

    return Transformer(cfg)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_compatible(cfg, store: FeatureStore) -> None:
    if store.dim != cfg.input_dim:
        raise TrainingError(f"{store.path}: features have dim {store.dim}, model.input_dim is {cfg.input_dim}")
    if not store.has_labels:
        raise TrainingError(f"{store.path}: partition {store.meta.get('partition')!r} has no labels to train on")
    labels = store.labels_array
    if len(labels) and int(labels.max()) >= cfg.vocab_size:
        raise TrainingError(f"{store.path}: label index {int(labels.max())} ≥ model.vocab_size {cfg.vocab_size}")
    if len(labels) and np.isin(np.asarray(labels), [cfg.pad, cfg.sos, cfg.eos]).any():
        raise TrainingError(f"{store.path / 'labels.npy'}: transcripts contain <pad>/<sos>/<eos> indices "
                            f"(expected characters only, markers stripped)")


# ---- losses, one batch ----------------------------------------------------------------------------------------------

def seq2seq_loss(out: dict, y_out, y, y_lengths, cfg, train_cfg: Seq2SeqTrainConfig, label_smoothing: float):
    """(total, cross-entropy) — CE per target token, PAD ignored; + ctc_weight × CTC (blank = pad index)."""
    logits = out["logits"].float()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y_out.reshape(-1), ignore_index=cfg.pad,
                         label_smoothing=label_smoothing)
    if "ctc_log_probs" not in out or train_cfg.ctc_weight == 0:
        return ce, ce
    ctc = F.ctc_loss(out["ctc_log_probs"].transpose(0, 1), y, out["encoder_lengths"], y_lengths, blank=cfg.pad,
                     reduction="mean", zero_infinity=True)
    return (1 - train_cfg.ctc_weight) * ce + train_cfg.ctc_weight * ctc, ce


def guided_attention_loss(attention: torch.Tensor, target_lengths: torch.Tensor, encoder_lengths: torch.Tensor,
                          sigma: float) -> torch.Tensor:
    """Mean over real output steps of Σ_t W[n, t]·A[n, t], W = 1 - exp(-(n/N - t/T)² / (2σ²)) with each utterance's
    own N (output steps, <eos> included) and T (encoder frames): 0 for a diagonal alignment, → 1 far from it.
    attention (B, L, T) as returned by the model's teacher-forced pass."""
    B, L, T = attention.shape
    n = torch.arange(L, device=attention.device, dtype=torch.float32)[None, :, None]
    t = torch.arange(T, device=attention.device, dtype=torch.float32)[None, None, :]
    N = target_lengths.to(attention.device, torch.float32)[:, None, None]
    TT = encoder_lengths.to(attention.device, torch.float32)[:, None, None]
    # positions at step/frame centres, so a one-step, one-frame utterance is "on the diagonal"
    offset = (n + 0.5) / N - (t + 0.5) / TT
    weights = 1.0 - torch.exp(-offset.square() / (2 * sigma ** 2))
    real = (n < N) & (t < TT)
    penalty = (weights * attention.float() * real).sum(dim=2)               # (B, L)
    steps = (n[..., 0] < N[..., 0]).float()                                  # (B, L)
    return (penalty * steps).sum() / steps.sum().clamp(min=1.0)


def oom_message(batch, train_cfg: Seq2SeqTrainConfig) -> str:
    x, y_in = batch[0], batch[2]
    frames, tokens = x.shape[0] * x.shape[1], y_in.shape[0] * y_in.shape[1]
    frames_full = frames / train_cfg.max_frames_per_batch
    tokens_full = tokens / train_cfg.max_tokens_per_batch
    knob, now = (("train.max_frames_per_batch", train_cfg.max_frames_per_batch) if frames_full >= tokens_full
                 else ("train.max_tokens_per_batch", train_cfg.max_tokens_per_batch))
    return (f"CUDA out of memory on a batch of {x.shape[0]} utterances ({frames} padded frames, {tokens} padded "
            f"target tokens): lower {knob} (now {now}), e.g. --set {knob}={int(now * 0.6)}")


def train_step(model, batch, optimizer, scaler, train_cfg, rt: Runtime, gen: torch.Generator, tf_rate: float,
               guided_weight: float = 0.0):
    x, x_lengths, y_in, y_out, y, y_lengths = batch
    x = spec_augment(x, x_lengths, train_cfg.specaugment, gen)
    x, x_lengths, y_in, y_out, y, y_lengths = [t.to(rt.device, non_blocking=rt.cuda)
                                               for t in (x, x_lengths, y_in, y_out, y, y_lengths)]
    optimizer.zero_grad(set_to_none=True)
    try:
        with rt.autocast():
            out = model(x, x_lengths, y_in, teacher_forcing=tf_rate, generator=gen)
        loss, ce = seq2seq_loss(out, y_out, y, y_lengths, model.cfg, train_cfg, train_cfg.label_smoothing)
        if guided_weight > 0:
            loss = loss + guided_weight * guided_attention_loss(out["attention"], y_lengths + 1,
                                                                out["encoder_lengths"],
                                                                train_cfg.guided_attention.sigma)
        scaler.scale(loss).backward()
    except torch.OutOfMemoryError:
        raise TrainingError(oom_message(batch, train_cfg)) from None
    if train_cfg.grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.item()


# ---- evaluation ---------------------------------------------------------------------------------------------------

def to_text(tokens, symbols: list[str]) -> str:
    return "".join(symbols[t] for t in tokens if t < len(symbols))


def score(metric: str, refs: list[str], hyps: list[str]) -> float:
    return cer(refs, hyps) if metric == "cer" else levenshtein_mean(refs, hyps)


@torch.no_grad()
def evaluate(model, loader, rt: Runtime, symbols: list[str], metric: str, max_length: int) -> dict:
    model.eval()
    refs, hyps, losses = [], [], []
    for batch in loader:
        x, x_lengths, y_in, y_out, y, y_lengths = [t.to(rt.device) for t in batch]
        with rt.autocast():
            out = model(x, x_lengths, y_in)
            hypotheses = greedy_search(model, x, x_lengths, max_length)
        losses.append(F.cross_entropy(out["logits"].float().flatten(0, 1), y_out.flatten(), ignore_index=model.cfg.pad).item())
        refs += [to_text(row[:n].tolist(), symbols) for row, n in zip(y, y_lengths)]
        hyps += [to_text(h, symbols) for h in hypotheses]
    model.train()
    return {"dev_loss": float(np.mean(losses)) if losses else None, METRIC: score(metric, refs, hyps),
            "examples": list(zip(refs[:2], hyps[:2]))}


@torch.no_grad()
def plot_dev_attention(model, store: FeatureStore, count: int, out_dir: Path, epoch: int, symbols: list[str],
                       rt: Runtime, max_length: int) -> list[Path]:
    """PNG attention maps of the first `count` dev utterances (greedy decoding, one at a time: no padding)."""
    model.eval()
    paths = []
    for i in range(min(count, len(store))):
        x = torch.from_numpy(np.array(store.features(i), dtype=np.float32))[None].to(rt.device)
        hypotheses, maps = greedy_search(model, x, torch.tensor([x.shape[1]], device=rt.device), max_length,
                                         with_attention=True)
        text = to_text(hypotheses[0], symbols)
        labels = list(text) + ["<eos>"] if len(maps[0]) == len(text) + 1 else None
        paths.append(plot_attention(maps[0].numpy(), out_dir / "attention" / f"epoch{epoch:03d}-{store.ids[i]}.png",
                                    f"epoch {epoch}  {store.ids[i]}\n{text[:90]}", labels))
    model.train()
    return paths


# ---- the loop -------------------------------------------------------------------------------------------------------

def epoch_plans(store: FeatureStore, cfg: Seq2SeqTrainConfig) -> list[list[list[int]]]:
    tokens = np.diff(store.label_offsets)
    return [budget_batches(store.lengths, tokens, cfg.max_frames_per_batch, cfg.max_tokens_per_batch,
                           cfg.max_batch_size, cfg.seed, epoch) for epoch in range(1, cfg.epochs + 1)]


def summary_line(row: dict, epochs: int) -> str:
    dev = "" if row[METRIC] is None else f"  dev_loss {row['dev_loss']:.3f}  {METRIC} {row[METRIC]:.2f}"
    return (f"epoch {row['epoch']:3d}/{epochs}  train_loss {row['train_loss']:.3f}{dev}  tf {row['tf_rate']:.3f}  "
            f"lr {row['lr']:.2e}  {row['seconds']:.0f}s")


def train_seq2seq(model_cfg, train_cfg: Seq2SeqTrainConfig, train_store, dev_store, out_dir: Path, *,
                  symbols: list[str], metric: str = "levenshtein", tracking: str = "auto", run_name: str = "hw4p2",
                  run_config: dict | None = None, progress: bool = True,
                  stop_after_epoch: int | None = None) -> dict:
    """Train (or resume from out_dir/checkpoints/last.pt) and return the final metrics."""
    rt = Runtime.detect()
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    train_store, dev_store = open_store(train_store), open_store(dev_store)
    for store in (train_store, dev_store):
        check_compatible(model_cfg, store)
    cfg = train_cfg

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg).to(rt.device)
    n_params = count_parameters(model)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=rt.cuda)
    plans = epoch_plans(train_store, cfg)
    schedule = LRSchedule(cfg.scheduler, optimizer, steps_per_epoch=math.ceil(np.mean([len(p) for p in plans])),
                          total_steps=sum(len(p) for p in plans))
    keeper = TopKKeeper(ckpt_dir, cfg.keep_top_k, cfg.keep_last, metric=METRIC, direction="min", tag=TAG)

    history, start_epoch, train_seconds, wandb_id, tf_rate = [], 1, 0.0, None, cfg.teacher_forcing.start
    last_path = ckpt_dir / "last.pt"
    last = resume_from_last(last_path, model_cfg, model, optimizer, schedule, scaler)
    if last:
        history, start_epoch = last["history"], last["epoch"] + 1
        train_seconds, wandb_id, tf_rate = last["train_seconds"], last.get("wandb_id"), last["tf_rate"]
        keeper.drop_after(last["epoch"])

    collate = Seq2SeqCollate(model_cfg.pad, model_cfg.sos, model_cfg.eos)
    dataset = Seq2SeqDataset(train_store)
    dev_tokens = np.diff(dev_store.label_offsets)
    dev_loader = DataLoader(Seq2SeqDataset(dev_store), collate_fn=collate, num_workers=cfg.num_workers,
                            pin_memory=rt.cuda,
                            batch_sampler=budget_batches(dev_store.lengths, dev_tokens, cfg.eval_max_frames,
                                                         cfg.max_tokens_per_batch * 2, 256, shuffle=False))
    empty_dist = score(metric, [to_text(dev_store.labels(i).tolist(), symbols) for i in range(len(dev_store))],
                       [""] * len(dev_store))

    tracker = Tracker(tracking, out_dir, run_name, run_config or {}, resume_id=wandb_id)
    console = Console(True, progress, cfg.epochs, start_epoch)
    if start_epoch == 1:
        alone = oversized(train_store.lengths, np.diff(train_store.label_offsets), cfg.max_frames_per_batch,
                          cfg.max_tokens_per_batch)
        console.line(f"{run_name}: {model_cfg.family}, {n_params:,} parameters, {len(train_store)} train / "
                     f"{len(dev_store)} dev utterances, {len(plans[0])} batches per epoch, device {rt.device}"
                     + (f"; {len(alone)} utterances exceed a batch budget and train alone" if alone else ""))
    last_epoch = min(cfg.epochs, stop_after_epoch or cfg.epochs)
    stopped_early = _patience_exhausted(history, cfg.early_stopping)
    try:
        for epoch in range(start_epoch, last_epoch + 1):
            if stopped_early:
                break
            t0 = time.time()
            model.train()
            gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
            loader = DataLoader(dataset, batch_sampler=plans[epoch - 1], collate_fn=collate,
                                num_workers=cfg.num_workers, pin_memory=rt.cuda)
            console.start_epoch(epoch, len(plans[epoch - 1]))
            losses = []
            guided_weight = cfg.guided_attention.weight * cfg.guided_attention.decay ** (epoch - 1)
            for batch in loader:
                losses.append(train_step(model, batch, optimizer, scaler, cfg, rt, gen, tf_rate, guided_weight))
                schedule.step_batch()
                console.batch_done(losses[-1])
            dev = {"dev_loss": None, METRIC: None}
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                dev = evaluate(model, dev_loader, rt, symbols, metric, cfg.eval_max_length)
                if cfg.attention_plots:
                    plot_dev_attention(model, dev_store, cfg.attention_plots, out_dir, epoch, symbols, rt,
                                       cfg.eval_max_length)
            examples = dev.pop("examples", [])
            row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"), **dev,
                   "tf_rate": tf_rate, "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.time() - t0, 2)}
            schedule.step_epoch(dev[METRIC])
            tf_rate = next_rate(cfg.teacher_forcing, tf_rate, epoch, dev[METRIC])
            history.append(row)
            train_seconds += row["seconds"]
            save_epoch(model, model_cfg, cfg, optimizer, schedule, scaler, keeper, row, history, out_dir,
                       train_seconds, tracker.run_id, tf_rate)
            tracker.log({"train/loss": row["train_loss"], "dev/loss": dev["dev_loss"], f"dev/{TAG}": dev[METRIC],
                         "tf_rate": row["tf_rate"], "lr": row["lr"], "epoch_seconds": row["seconds"]}, step=epoch)
            console.line(summary_line(row, cfg.epochs), epoch_done=True)
            for ref, hyp in examples[:1]:
                console.line(f"      ref: {ref}\n      hyp: {hyp}")
            stopped_early = _patience_exhausted(history, cfg.early_stopping)
            if stopped_early:
                console.line(f"early stopping: no better {METRIC} in the last {cfg.early_stopping} evaluations")
    finally:
        console.close()

    metrics = final_metrics(history, keeper, ckpt_dir, n_params, empty_dist, train_seconds, stopped_early)
    atomic_write_json(out_dir / "metrics.json", metrics)
    tracker.finish({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    return metrics


def _patience_exhausted(history: list[dict], patience: int | None) -> bool:
    evaluated = [r[METRIC] for r in history if r[METRIC] is not None]
    if not patience or len(evaluated) <= patience:
        return False
    return min(evaluated[-patience:]) >= min(evaluated[:-patience])


def save_epoch(model, model_cfg, cfg, optimizer, schedule, scaler, keeper, row, history, out_dir, train_seconds,
               wandb_id, tf_rate) -> None:
    metrics = {k: row[k] for k in ("train_loss", "dev_loss", METRIC, "tf_rate")}
    keeper.offer(model_checkpoint(model, model_cfg, row["epoch"], metrics, family=model_cfg.family), row[METRIC],
                 row["epoch"])
    save_last(model_checkpoint(model, model_cfg, row["epoch"], metrics, family=model_cfg.family), out_dir, history,
              cfg, optimizer, schedule, scaler, train_seconds, wandb_id, tf_rate=tf_rate)


def final_metrics(history, keeper, ckpt_dir, n_params, empty_dist, train_seconds, stopped_early) -> dict:
    evaluated = [r for r in history if r[METRIC] is not None]
    best = min(evaluated, key=lambda r: (r[METRIC], r["epoch"])) if evaluated else None
    return {
        f"best_{METRIC}": best[METRIC] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "best_checkpoint": str(ckpt_dir / keeper.best["file"]) if keeper.best else None,
        "epochs": history[-1]["epoch"] if history else 0,
        "stopped_early": stopped_early,
        "final_train_loss": history[-1]["train_loss"] if history else None,
        f"final_{METRIC}": evaluated[-1][METRIC] if evaluated else None,
        "dev_empty_dist": empty_dist,
        "train_seconds": round(train_seconds, 2),
        "params": n_params,
    }
