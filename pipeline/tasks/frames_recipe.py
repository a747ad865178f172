"""The hw1p2 recipe schema: frame windows (data), the MLP (model) and its training (train), decode options.

Torch-free, so planning (`asrpipe status`, a cached run) stays fast. The MLP's shape arithmetic lives here too:
the train stage fits the width to the profile's parameter limit, and refuses an over-limit model, before any
torch import. pipeline/models/mlp.py builds exactly the layers `MLPConfig.hidden_widths()` describes.

Archetypes (hidden widths for base width w, L layers, narrowest/widest ratio `taper`):
    cylinder / pencil   w, w, …, w
    pyramid             w → taper·w, linearly narrower with depth
    inverted-pyramid    taper·w → w
    diamond             taper·w → w (middle) → taper·w
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.config import RunRef
from pipeline.errors import AsrpipeError
from pipeline.tasks.train_recipe import SchedulerConfig, SpecAugmentConfig, TrainConfig

Archetype = Literal["cylinder", "pencil", "pyramid", "inverted-pyramid", "diamond"]
Activation = Literal["relu", "leakyrelu", "gelu", "silu", "softplus", "tanh"]
Init = Literal["default", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "uniform"]


class ParamLimitError(AsrpipeError, ValueError):
    """A model that does not fit the competition: over its parameter limit, or a model key the profile sets."""


class FrameDataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    context: int = Field(30, ge=0, le=200)            # frames each side: the window is 2·context + 1 frames
    padding: Literal["utterance", "global"] = "utterance"  # zeros outside the utterance, or the starters' global pad
    subset: float = Field(1.0, gt=0.0, le=1.0)        # fraction of train frames drawn per epoch (fresh each epoch)


class MLPConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # filled by the train stage from the profile and the data section
    input_dim: int = 28                  # per-frame feature dim F (13 / 15 / 27 / 28 by semester)
    context: int = 30
    num_classes: int = 40
    param_limit: int | None = None
    # shape
    archetype: Archetype = "cylinder"
    num_layers: int = Field(6, ge=1, le=32)        # hidden layers
    width: int | None = Field(None, ge=1)          # widest hidden layer; None = the largest that fits the limit
    fill: float = Field(0.99, gt=0.0, le=1.0)      # share of the parameter limit a fitted width may use
    budget_if_no_limit: int | None = Field(20_000_000, ge=1)  # fitted to this when a semester states no limit
    width_multiple: int = Field(8, ge=1)           # fitted widths are rounded down to a multiple of this
    taper: float = Field(0.5, gt=0.0, le=1.0)      # narrowest / widest layer (pyramid, diamond)
    # layers
    batch_norm: Literal["all", "alternate", "none"] = "all"   # "alternate": layers 0, 2, 4, …
    activation: Activation = "gelu"
    leaky_slope: float = 0.01
    dropout: float | list[float] = 0.25            # one rate, or one per hidden layer (a schedule over depth)
    dropout_alternate: bool = False                # dropout on layers 0, 2, 4, … only
    init: Init = "default"                         # "default" = PyTorch's Linear init

    @model_validator(mode="after")
    def _check(self) -> "MLPConfig":
        rates = self.dropout if isinstance(self.dropout, list) else [self.dropout]
        if isinstance(self.dropout, list) and len(self.dropout) != self.num_layers:
            raise ValueError(f"dropout has {len(self.dropout)} rates for {self.num_layers} layers (one per layer)")
        if any(not 0.0 <= p < 1.0 for p in rates):
            raise ValueError(f"dropout rates must be in [0, 1) (got {self.dropout})")
        return self

    @property
    def window_dim(self) -> int:
        return (2 * self.context + 1) * self.input_dim

    def shape_factors(self) -> list[float]:
        n, taper = self.num_layers, self.taper
        steps = [i / (n - 1) for i in range(n)] if n > 1 else [0.0]
        if self.archetype in ("cylinder", "pencil") or n == 1:
            return [1.0] * n
        if self.archetype == "pyramid":
            return [1.0 - (1.0 - taper) * s for s in steps]
        if self.archetype == "inverted-pyramid":
            return [taper + (1.0 - taper) * s for s in steps]
        centre = (n - 1) / 2  # diamond: full width at the middle layer (both middle layers when n is even)
        distance = [abs(i - centre) for i in range(n)]
        near, far = min(distance), max(distance)
        return [1.0 - (1.0 - taper) * ((d - near) / (far - near) if far > near else 0.0) for d in distance]

    def hidden_widths(self, width: int | None = None) -> list[int]:
        width = width or self.width
        if width is None:
            raise ValueError("model.width is unset: resolve it with fit_width() first")
        return [max(1, round(width * f)) for f in self.shape_factors()]

    def batch_norm_at(self, layer: int) -> bool:
        return self.batch_norm == "all" or (self.batch_norm == "alternate" and layer % 2 == 0)

    def dropout_at(self, layer: int) -> float:
        if self.dropout_alternate and layer % 2 == 1:
            return 0.0
        return self.dropout[layer] if isinstance(self.dropout, list) else self.dropout

    def parameter_count(self, width: int | None = None) -> int:
        """Trainable parameters of the model mlp.py builds (BatchNorm's running stats are buffers, not counted)."""
        dims = [self.window_dim, *self.hidden_widths(width)]
        linear = sum(a * b + b for a, b in zip(dims, dims[1:])) + dims[-1] * self.num_classes + self.num_classes
        norm = sum(2 * w for i, w in enumerate(dims[1:]) if self.batch_norm_at(i))
        return linear + norm

    def macs_per_frame(self, width: int | None = None) -> int:
        dims = [self.window_dim, *self.hidden_widths(width), self.num_classes]
        return sum(a * b for a, b in zip(dims, dims[1:]))

    def describe(self) -> str:
        widths = self.hidden_widths()
        shape = f"{len(widths)}×{widths[0]}" if len(set(widths)) == 1 else "-".join(map(str, widths))
        return f"{self.archetype} {shape}, context {self.context} ({self.window_dim} inputs)"


def fit_width(cfg: MLPConfig, competition: str = "this competition") -> int:
    """The largest base width (a multiple of width_multiple) whose model stays within fill · param_limit."""
    limit = cfg.param_limit if cfg.param_limit is not None else cfg.budget_if_no_limit
    if limit is None:
        raise ParamLimitError(f"model.width: {competition} has no parameter limit to fit the width to; "
                              f"set model.width or model.budget_if_no_limit")
    budget = int(limit * cfg.fill)
    step = cfg.width_multiple
    if cfg.parameter_count(step) > budget:
        raise ParamLimitError(f"model: {competition}: even width {step} has {cfg.parameter_count(step):,} parameters, over "
                              f"{budget:,} ({cfg.fill:g} of {limit:,}); lower data.context "
                              f"or model.num_layers")
    low, high = 1, 2
    while cfg.parameter_count(high * step) <= budget:
        low, high = high, high * 2
    while high - low > 1:  # parameter_count grows with width: bisect on multiples of `step`
        middle = (low + high) // 2
        low, high = (middle, high) if cfg.parameter_count(middle * step) <= budget else (low, middle)
    return low * step


def resolve_model(model: dict, feature_dim: int, num_classes: int, context: int, param_limit: int | None,
                  competition: str) -> dict:
    """The model section with the profile's facts filled in and the width fixed; refuses a model over the limit."""
    filled = {"input_dim": feature_dim, "num_classes": num_classes, "context": context, "param_limit": param_limit}
    sources = {"input_dim": "the profile's feature_dim", "num_classes": "the profile's symbols",
               "context": "data.context", "param_limit": "the profile's param_limit"}
    for key, value in filled.items():  # a recipe value other than the default would be silently replaced
        given = model.get(key, MLPConfig.model_fields[key].default)
        if given not in (MLPConfig.model_fields[key].default, value):
            raise ParamLimitError(f"model.{key}={given}: this is set from {sources[key]} ({value}); "
                                  f"remove it{' and set data.context' if key == 'context' else ''}")
    cfg = MLPConfig(**{**model, **filled})
    if cfg.width is None:
        cfg = cfg.model_copy(update={"width": fit_width(cfg, competition)})
    params = cfg.parameter_count()
    if param_limit is not None and params > param_limit:
        raise ParamLimitError(
            f"model: {params:,} parameters exceed the {competition} limit of {param_limit:,} ({cfg.describe()}); "
            f"lower model.width or model.num_layers, or unset model.width to fit the limit")
    return cfg.model_dump(mode="json")


class FrameSchedulerConfig(SchedulerConfig):
    """hw1p2's defaults: LinearLR's own start factor (1/3, as seed 000 used it), plateau gains in accuracy points."""
    warmup_start_factor: float = Field(1.0 / 3.0, gt=0.0, le=1.0)
    min_lr: float = Field(1e-6, ge=0.0)
    threshold: float = Field(0.01, ge=0.0)
    threshold_mode: Literal["rel", "abs"] = "abs"


class FrameTrainConfig(TrainConfig):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(2048, ge=1)
    eval_batch_size: int = Field(8192, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    scheduler: FrameSchedulerConfig = Field(default_factory=FrameSchedulerConfig)
    masking: SpecAugmentConfig = Field(default_factory=lambda: SpecAugmentConfig(p_freq=0.5, p_time=0.5))
    grad_clip: float | None = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _no_window_warp(self) -> "FrameTrainConfig":
        if self.masking.time_warp:
            raise ValueError("masking.time_warp warps whole utterances, and hw1p2 trains on windows: use "
                             "train.augment.speed (the window's context read at another speed) instead")
        return self


class FrameDecodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ensemble: int = Field(1, ge=1)       # 1: the selected model.pt; N: average the softmax of the N best checkpoints
    ensemble_runs: list[RunRef] = []        # other train runs (keys from `asrpipe runs`) whose posteriors are averaged in
    batch_size: int = Field(8192, ge=1)
    tta_warp: float = Field(0.0, ge=0.0, le=0.3)  # r > 0: also classify at mel axis × (1-r), × (1+r); average
    smooth: int = Field(1, ge=1)            # moving average of the posteriors over this many frames of an utterance

    @model_validator(mode="after")
    def _odd_smoothing(self) -> "FrameDecodeConfig":
        if self.smooth % 2 == 0:
            raise ValueError(f"smooth must be odd (a window centred on each frame), got {self.smooth}")
        return self


SECTIONS = {"data": FrameDataConfig, "model": MLPConfig, "train": FrameTrainConfig, "decode": FrameDecodeConfig}
