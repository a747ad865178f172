"""The hw3p2 recipe schema: model and training configs, validated by pydantic (unknown keys rejected).

Kept free of torch so that reading a recipe (`asrpipe status`, a fully cached `asrpipe run`) stays fast; the model
(pipeline/models/ctc_rnn.py) and the trainer (pipeline/training/) import these classes from here.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class CTCRNNConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_dim: int = 28                 # MFCC dim: 13 (S22), 15 (F22), 27 (S23/S24), 28 (F23+)
    num_classes: int = 41               # CTC outputs incl. blank at index 0
    # embedding
    embed: Literal["conv", "resnet"] = "resnet"
    embed_channels: int = 256
    embed_layers: int = 2               # conv layers ("conv") or BasicBlocks after a stem conv ("resnet")
    kernel_size: int = 3
    downsample: int = 1                 # stride-2 layers: time factor 1 / 2 / 4 ...
    embed_dropout: float = 0.3
    # recurrent
    lstm_hidden: int = 256
    lstm_layers: int = 4
    lstm_dropout: float = 0.3           # between LSTM layers
    # head
    head_hidden: int = 2048
    head_activation: Literal["gelu", "relu"] = "gelu"
    head_norm: bool = True
    head_dropout: float = 0.4
    init: Literal["default", "kaiming"] = "default"

    @model_validator(mode="after")
    def _check(self) -> "CTCRNNConfig":
        if self.downsample > self.embed_layers:
            raise ValueError(f"downsample={self.downsample} needs at least as many embed_layers (got {self.embed_layers})")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (got {self.kernel_size})")
        return self


class SchedulerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["cosine", "plateau", "none"] = "cosine"
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.05
    min_lr: float = 1e-5
    factor: float = 0.5        # plateau
    patience: int = 2          # plateau, in evaluated epochs


class SpecAugmentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    freq_mask: int = 0   # max band width (features); 0 = off
    time_mask: int = 0   # max span width (frames); 0 = off
    n_freq: int = 1
    n_time: int = 1
    p_freq: float = 1.0
    p_time: float = 1.0

    @property
    def enabled(self) -> bool:
        return (self.freq_mask > 0 and self.n_freq > 0 and self.p_freq > 0) or (
            self.time_mask > 0 and self.n_time > 0 and self.p_time > 0)


class CTCTrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = 50
    batch_size: int = 64
    max_frames_per_batch: int | None = None   # cap on padded frames per batch (OOM guard for long utterances)
    eval_batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-2
    optimizer: Literal["adamw", "adam"] = "adamw"
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    grad_clip: float | None = 5.0             # max grad norm; None = off
    specaugment: SpecAugmentConfig = Field(default_factory=SpecAugmentConfig)
    keep_top_k: int = 3
    keep_last: int = 0                        # also keep the last N epochs' weights (for checkpoint averaging)
    seed: int = 11785
    num_workers: int = 0
    eval_every: int = 1                       # epochs; the last epoch is always evaluated


SECTIONS = {"model": CTCRNNConfig, "train": CTCTrainConfig}
