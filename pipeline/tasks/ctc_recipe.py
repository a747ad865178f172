"""The hw3p2 recipe schema: model and training configs, validated by pydantic (unknown keys rejected).

Kept free of torch so that reading a recipe (`asrpipe status`, a fully cached `asrpipe run`) stays fast; the model
(pipeline/models/ctc_rnn.py) and the trainer (pipeline/training/) import these classes from here.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.tasks.train_recipe import SpecAugmentConfig, TrainConfig


PROFILE_KEYS = ("input_dim", "num_classes")


class CTCModelRecipe(BaseModel):
    """`model:` as a recipe writes it: the architecture only (the input width and classes come from the profile)."""
    model_config = ConfigDict(extra="forbid")

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

    @model_validator(mode="before")
    @classmethod
    def _no_profile_keys(cls, data):
        if cls is CTCModelRecipe and isinstance(data, dict):
            for key in PROFILE_KEYS:
                if key in data:
                    raise ValueError(f"{key} is set from the competition profile (feature dim, symbols); "
                                     f"remove model.{key} from the recipe")
        return data

    @model_validator(mode="after")
    def _check(self) -> "CTCModelRecipe":
        if self.downsample > self.embed_layers:
            raise ValueError(f"downsample={self.downsample} needs at least as many embed_layers (got {self.embed_layers})")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (got {self.kernel_size})")
        return self


class CTCRNNConfig(CTCModelRecipe):
    """The model as built: the recipe's architecture plus the profile's facts (the train stage fills them)."""

    input_dim: int                      # MFCC dim: 13 (S22), 15 (F22), 27 (S23/S24), 28 (F23+)
    num_classes: int = 41               # CTC outputs incl. blank at index 0


class CTCTrainConfig(TrainConfig):
    batch_size: int = Field(64, ge=1)
    max_frames_per_batch: int | None = None   # cap on padded frames per batch (OOM guard for long utterances)
    eval_batch_size: int = Field(64, ge=1)
    specaugment: SpecAugmentConfig = Field(default_factory=SpecAugmentConfig)


SECTIONS = {"model": CTCModelRecipe, "train": CTCTrainConfig}
