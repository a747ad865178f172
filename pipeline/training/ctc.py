"""hw3p2 (CTC) for the training loop: length-bucketed batches, augmentation (augment.py), CTC loss, greedy dev Levenshtein.

    metrics = train(CTCTask(model_cfg, train_cfg, train_store, dev_store), out_dir, run_name="…")
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pipeline.data.store import FeatureStore, open_store
from pipeline.decoding.ctc_greedy import greedy_decode
from pipeline.decoding.metrics import levenshtein_mean
from pipeline.tasks.ctc_recipe import ARCHS, CTCTrainConfig
from pipeline.training.batching import UtteranceDataset, collate_padded, epoch_batches, quick_subset
from pipeline.training.loop import Runtime, TrainTask, check_store
from pipeline.training.augment import augment_batch, load_warps

BLANK = 0


def ctc_loss(log_probs: torch.Tensor, out_lengths: torch.Tensor, y: torch.Tensor, y_lengths: torch.Tensor) -> torch.Tensor:
    # ctc_loss wants (T, B, C) and is unstable in fp16: always float32
    return F.ctc_loss(log_probs.transpose(0, 1).float(), y, out_lengths, y_lengths,
                      blank=BLANK, reduction="mean", zero_infinity=True)


def as_string(indices) -> str:
    """One character per class; any injective map gives the Levenshtein of the competition's single-char strings."""
    return "".join(chr(0x100 + int(i)) for i in indices)


class CTCTask(TrainTask):
    metric, direction, tag = "dev_lev", "min", "lev"

    def __init__(self, model_cfg, cfg: CTCTrainConfig, train_store, dev_store):
        super().__init__(model_cfg, cfg)
        self.arch = model_cfg.arch
        self.train_store, self.dev_store = open_store(train_store), open_store(dev_store)
        for store in (self.train_store, self.dev_store):
            check_store(store, model_cfg.input_dim, model_cfg.num_classes)
        self.subset = quick_subset(len(self.train_store), cfg.quick, cfg.seed)
        self.plans: dict[int, list] = {}
        self.model_facts: dict = {}

    def build_model(self):
        if self.arch == "dilated_conv":
            from pipeline.models.dilated_conv import DilatedConvCTC

            model = DilatedConvCTC(self.model_cfg)
            self.model_facts = model.describe()
            return model
        from pipeline.models.ctc_rnn import CTCRNN

        return CTCRNN(self.model_cfg)

    def describe(self, n_params: int) -> str:
        used = len(self.train_store) if self.subset is None else f"{len(self.subset)} of {len(self.train_store)}"
        facts = self.model_facts
        field = (f", receptive field {facts['receptive_field_frames']} frames ({facts['receptive_field_ms']:g} ms)"
                 if facts else "")
        return f"{self.arch}, {n_params:,} parameters{field}, {used} train / {len(self.dev_store)} dev utterances"

    def plan(self, epoch: int) -> list:
        if epoch not in self.plans:
            cfg = self.cfg
            self.plans[epoch] = epoch_batches(self.train_store.lengths, cfg.batch_size_at(epoch, cfg.batch_size),
                                              cfg.max_frames_per_batch, seed=cfg.seed, epoch=epoch, among=self.subset)
        return self.plans[epoch]

    def collate(self, store):
        """Pads each batch to its longest utterance, or (train.padding fixed) to the split's longest."""
        fixed = self.cfg.padding == "fixed" and len(store)
        return partial(collate_padded, pad_to=int(np.max(store.lengths)) if fixed else None)

    def load(self, batches: list, rt: Runtime):
        return DataLoader(UtteranceDataset(self.train_store), batch_sampler=batches,
                          collate_fn=self.collate(self.train_store), num_workers=self.cfg.num_workers,
                          pin_memory=rt.cuda)

    def loss(self, model, batch, rt: Runtime, gen: torch.Generator, epoch: int) -> torch.Tensor:
        x, y, x_lengths, y_lengths = batch
        x, x_lengths = augment_batch(x, x_lengths, self.cfg.augment, self.cfg.specaugment, gen, self.warps)
        x, y, x_lengths, y_lengths = rt.to_device((x, y, x_lengths, y_lengths))
        log_probs, out_lengths = model(x, x_lengths)
        return ctc_loss(log_probs, out_lengths, y, y_lengths)

    @torch.no_grad()
    def evaluate(self, model, rt: Runtime, epoch: int, out_dir: Path) -> dict:
        batches = epoch_batches(self.dev_store.lengths, self.cfg.eval_batch_size, shuffle=False)
        loader = DataLoader(UtteranceDataset(self.dev_store), batch_sampler=batches,
                            collate_fn=self.collate(self.dev_store),
                            num_workers=self.cfg.num_workers, pin_memory=rt.cuda)
        losses, refs, hyps = [], [], []
        for batch in loader:
            x, y, x_lengths, y_lengths = rt.to_device(batch)
            with rt.autocast():
                log_probs, out_lengths = model(x, x_lengths)
            losses.append(ctc_loss(log_probs, out_lengths, y, y_lengths).item())
            refs += [as_string(y[i, : y_lengths[i]].tolist()) for i in range(len(y))]
            hyps += [as_string(h) for h in greedy_decode(log_probs, out_lengths)]
        return {"dev_loss": float(np.mean(losses)) if losses else None, "dev_lev": levenshtein_mean(refs, hyps)}

    def final_metrics(self) -> dict:
        # an empty hypothesis costs the target length: the score of a model that learned nothing
        return {"dev_blank_lev": float(np.mean(np.diff(self.dev_store.label_offsets))), **self.model_facts}


TASK = CTCTask  # what the family trains: its metric and direction (a sweep reads them)


def make_task(params: dict, normalized: str, train_store: str | None = None, **_) -> CTCTask:
    """The task a train stage (or a torchrun worker) trains, from the stage's params and the normalize output
    (`train_store`: another store to fit, the final fit's train+dev). The model takes the feature dim normalize
    found in the data, which may differ from the profile's declared one."""
    train_store = FeatureStore.open(train_store or Path(normalized) / "train")
    if train_store.dim != params["model"]["input_dim"]:
        print(f"features are {train_store.dim}-d in the data (the profile declares {params['model']['input_dim']}): "
              f"the model takes {train_store.dim}", flush=True)
    model = params["model"]
    task = CTCTask(ARCHS[model.get("arch", "ctc_rnn")](**{**model, "input_dim": train_store.dim}),
                   CTCTrainConfig(**params["train"]),
                   train_store, FeatureStore.open(Path(normalized) / "dev"))
    task.warps = load_warps(task.cfg.augment, normalized)
    return task
