"""The hw3p2 recipe schema: model and training configs, validated by pydantic (unknown keys rejected).

Kept free of torch so that reading a recipe (`asrpipe status`, a fully cached `asrpipe run`) stays fast; the models
(pipeline/models/ctc_rnn.py, dilated_conv.py) and the trainer (pipeline/training/ctc.py) import these classes. The
model section is one of two architectures, picked by `model.arch`:

    ctc_rnn       conv / ResNet embedding → BiLSTM → MLP head (seed 004, the starters' design)
    dilated_conv  stacks of residual dilated 1-D convolutions, dilations 1, 2, 4 … max_dilation (seed 003)
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.tasks.archs import arch_section
from pipeline.tasks.train_recipe import SpecAugmentConfig, TrainConfig


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_dim: int = 28                 # from the profile: MFCC dim 13 (S22), 15 (F22), 27 (S23/S24), 28 (F23+)
    num_classes: int = 41               # from the profile: CTC outputs incl. blank at index 0


class CTCRNNConfig(_Model):
    arch: Literal["ctc_rnn"] = "ctc_rnn"
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


class DilatedConvConfig(_Model):
    """seed 003: input projection → num_stacks stacks of residual blocks with dilations 1, 2, 4 … max_dilation
    (WaveNet-style) → head. `batchnorm` puts a BatchNorm (over real frames only) before each residual block."""
    arch: Literal["dilated_conv"] = "dilated_conv"
    channels: int = Field(256, ge=1)
    kernel_size: int = Field(3, ge=2)
    max_dilation: int = Field(64, ge=1)        # a power of 2: the largest dilation inside each stack
    num_stacks: int = Field(3, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    batchnorm: bool = True
    subsample: Literal[1, 2, 4] = 1            # stride-2 convolutions at the input: fewer frames for CTC
    head_hidden: int = Field(0, ge=0)          # 0: a linear head; else Linear → activation → dropout → Linear

    @model_validator(mode="after")
    def _check(self) -> "DilatedConvConfig":
        if self.max_dilation & (self.max_dilation - 1):
            raise ValueError(f"max_dilation must be a power of 2 (got {self.max_dilation})")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (got {self.kernel_size})")
        return self

    def dilations(self) -> list[int]:
        """Every block's dilation, stack after stack."""
        one_stack = [2 ** i for i in range(self.max_dilation.bit_length())]
        return one_stack * self.num_stacks


ARCHS = {"ctc_rnn": CTCRNNConfig, "dilated_conv": DilatedConvConfig}
PROFILE_KEYS = tuple(_Model.model_fields)  # input width and classes: the train stage takes them from the profile
CTCModelConfig = arch_section(ARCHS, default="ctc_rnn", profile_keys=PROFILE_KEYS, facts="feature dim, symbols")


class CTCTrainConfig(TrainConfig):
    batch_size: int = Field(64, ge=1)
    max_frames_per_batch: int | None = None   # cap on padded frames per batch (OOM guard for long utterances)
    eval_batch_size: int = Field(64, ge=1)
    specaugment: SpecAugmentConfig = Field(default_factory=SpecAugmentConfig)
    # seed 003's padding ablation: "batch" pads each batch to its longest utterance; "fixed" pads every batch to
    # the longest utterance of the split. Padded frames never enter the loss either way (CTC takes the lengths)
    padding: Literal["batch", "fixed"] = "batch"


SECTIONS = {"model": CTCModelConfig, "train": CTCTrainConfig}
