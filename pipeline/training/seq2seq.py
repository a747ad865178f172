"""hw4p2 (seq2seq: LAS or Transformer) for the training loop: memory-aware batches, teacher-forcing schedule,
cross-entropy (PAD ignored, label smoothing) + optional CTC auxiliary loss, guided attention, SpecAugment, greedy dev
distance (Levenshtein or CER, lower is better) and PNG attention maps of a few dev utterances.

    metrics = train(Seq2SeqTask(model_cfg, train_cfg, train_store, dev_store, symbols, "levenshtein"), out_dir, …)

Besides the loop's files, out_dir/attention/epochNNN-<utterance>.png at every evaluated epoch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pipeline.data.store import FeatureStore, open_store
from pipeline.decoding.attention_search import greedy_search, to_text
from pipeline.decoding.metrics import score
from pipeline.tasks.seq2seq_recipe import ARCHS, Seq2SeqTrainConfig
from pipeline.training.attention_plots import plot_dev_attention
from pipeline.training.batching import Seq2SeqCollate, UtteranceDataset, epoch_batches, oversized, quick_subset
from pipeline.training.loop import Runtime, TrainingError, TrainTask, check_store
from pipeline.training.augment import augment_batch, load_warps
from pipeline.training.teacher_forcing import next_rate


def check_labels(cfg, store: FeatureStore) -> None:
    check_store(store, cfg.input_dim)
    labels = store.labels_array
    if len(labels) and int(labels.max()) >= cfg.vocab_size:
        raise TrainingError(f"{store.path}: label index {int(labels.max())} ≥ model.vocab_size {cfg.vocab_size}")
    if len(labels) and np.isin(np.asarray(labels), [cfg.pad, cfg.sos, cfg.eos]).any():
        raise TrainingError(f"{store.path / 'labels.npy'}: transcripts contain <pad>/<sos>/<eos> indices "
                            f"(expected characters only, markers stripped)")


def seq2seq_loss(out: dict, y_out, y, y_lengths, cfg, train_cfg: Seq2SeqTrainConfig):
    """(total, cross-entropy) — CE per target token, PAD ignored; + ctc_weight × CTC (blank = pad index)."""
    logits = out["logits"].float()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y_out.reshape(-1), ignore_index=cfg.pad,
                         label_smoothing=train_cfg.label_smoothing)
    if "ctc_log_probs" not in out or train_cfg.ctc_weight == 0:
        return ce, ce
    ctc = F.ctc_loss(out["ctc_log_probs"].float().transpose(0, 1), y, out["encoder_lengths"], y_lengths,
                     blank=cfg.pad, reduction="mean", zero_infinity=True)
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


class Seq2SeqTask(TrainTask):
    metric, direction, tag = "dev_dist", "min", "dist"
    find_unused_parameters = True  # a CTC head with ctc_weight 0 gets no gradient

    def __init__(self, model_cfg, cfg: Seq2SeqTrainConfig, train_store, dev_store, symbols: list[str],
                 metric: str = "levenshtein"):
        super().__init__(model_cfg, cfg)
        self.arch = model_cfg.arch
        self.train_store, self.dev_store = open_store(train_store), open_store(dev_store)
        for store in (self.train_store, self.dev_store):
            check_labels(model_cfg, store)
        self.symbols, self.score_metric = list(symbols), metric
        self.collate = Seq2SeqCollate(model_cfg.pad, model_cfg.sos, model_cfg.eos)
        self.tf_rate = cfg.teacher_forcing.start
        self.guided_weight = 0.0
        self.plans: dict[int, list] = {}
        self.subset = quick_subset(len(self.train_store), cfg.quick, cfg.seed)

    def build_model(self):
        if self.model_cfg.arch == "las":
            from pipeline.models.las import LAS

            return LAS(self.model_cfg)
        from pipeline.models.transformer import Transformer

        return Transformer(self.model_cfg)

    def describe(self, n_params: int) -> str:
        cfg, store = self.cfg, self.train_store
        alone = oversized(store.lengths, np.diff(store.label_offsets) + 1, cfg.max_frames_per_batch,
                          cfg.max_tokens_per_batch)
        used = len(store) if self.subset is None else f"{len(self.subset)} of {len(store)}"
        return (f"{self.model_cfg.arch}, {n_params:,} parameters, {used} train / {len(self.dev_store)} dev "
                f"utterances" + (f"; {len(alone)} utterances exceed a batch budget and train alone" if alone else ""))

    def plan(self, epoch: int) -> list:
        if epoch not in self.plans:
            cfg, store = self.cfg, self.train_store
            self.plans[epoch] = epoch_batches(store.lengths, cfg.max_batch_size, cfg.max_frames_per_batch,
                                              np.diff(store.label_offsets) + 1, cfg.max_tokens_per_batch,
                                              seed=cfg.seed, epoch=epoch, among=self.subset)
        return self.plans[epoch]

    def load(self, batches: list, rt: Runtime):
        return DataLoader(UtteranceDataset(self.train_store), batch_sampler=batches, collate_fn=self.collate,
                          num_workers=self.cfg.num_workers, pin_memory=rt.cuda)

    def start_epoch(self, epoch: int) -> None:
        guided = self.cfg.guided_attention
        self.guided_weight = guided.weight * guided.decay ** (epoch - 1)

    def loss(self, model, batch, rt: Runtime, gen: torch.Generator, epoch: int) -> torch.Tensor:
        x, x_lengths, y_in, y_out, y, y_lengths = batch
        x, x_lengths = augment_batch(x, x_lengths, self.cfg.augment, self.cfg.specaugment, gen, self.warps)
        x, x_lengths, y_in, y_out, y, y_lengths = rt.to_device((x, x_lengths, y_in, y_out, y, y_lengths))
        out = model(x, x_lengths, y_in, teacher_forcing=self.tf_rate, generator=gen)
        loss, _ = seq2seq_loss(out, y_out, y, y_lengths, self.model_cfg, self.cfg)
        if self.guided_weight > 0:
            loss = loss + self.guided_weight * guided_attention_loss(
                out["attention"], y_lengths + 1, out["encoder_lengths"], self.cfg.guided_attention.sigma)
        return loss

    def oom_message(self, batch) -> str:
        return oom_message(batch, self.cfg)

    def epoch_row(self) -> dict:
        return {"tf_rate": self.tf_rate}

    @torch.no_grad()
    def evaluate(self, model, rt: Runtime, epoch: int, out_dir: Path) -> dict:
        cfg, store = self.cfg, self.dev_store
        batches = epoch_batches(store.lengths, 256, cfg.eval_max_frames, np.diff(store.label_offsets) + 1,
                                cfg.max_tokens_per_batch * 2, shuffle=False)
        loader = DataLoader(UtteranceDataset(store), batch_sampler=batches, collate_fn=self.collate,
                            num_workers=cfg.num_workers, pin_memory=rt.cuda)
        refs, hyps, losses = [], [], []
        for batch in loader:
            x, x_lengths, y_in, y_out, y, y_lengths = rt.to_device(batch)
            with rt.autocast():
                out = model(x, x_lengths, y_in)
                hypotheses = greedy_search(model, x, x_lengths, cfg.eval_max_length)
            losses.append(F.cross_entropy(out["logits"].float().flatten(0, 1), y_out.flatten(),
                                          ignore_index=self.model_cfg.pad).item())
            refs += [to_text(row[:n].tolist(), self.symbols) for row, n in zip(y, y_lengths)]
            hyps += [to_text(h, self.symbols) for h in hypotheses]
        if cfg.attention_plots:
            plot_dev_attention(model, store, cfg.attention_plots, out_dir, epoch, self.symbols, cfg.eval_max_length)
        return {"dev_loss": float(np.mean(losses)) if losses else None,
                "dev_dist": score(self.score_metric, refs, hyps), "examples": list(zip(refs[:2], hyps[:2]))}

    def end_epoch(self, row: dict) -> None:
        self.tf_rate = next_rate(self.cfg.teacher_forcing, self.tf_rate, row["epoch"], row["dev_dist"])

    def state_dict(self) -> dict:
        return {"tf_rate": self.tf_rate}

    def load_state_dict(self, state: dict) -> None:
        self.tf_rate = state.get("tf_rate", self.tf_rate)

    def final_metrics(self) -> dict:
        store = self.dev_store
        refs = [to_text(store.labels(i).tolist(), self.symbols) for i in range(len(store))]
        return {"dev_empty_dist": score(self.score_metric, refs, [""] * len(refs))}


TASK = Seq2SeqTask  # what the family trains: its metric and direction (a sweep reads them)


def make_task(params: dict, normalized: str, symbols: list[str], train_store: str | None = None,
              **_) -> Seq2SeqTask:
    normalized = Path(normalized)
    model_cfg = ARCHS[params["model"]["arch"]](**params["model"])
    task = Seq2SeqTask(model_cfg, Seq2SeqTrainConfig(**params["train"]),
                       FeatureStore.open(train_store or normalized / "train"),
                       FeatureStore.open(normalized / "dev"), symbols, params["metric"])
    task.warps = load_warps(task.cfg.augment, normalized)
    return task
