"""The hw4p2 recipe schema (attention-based character recognition): model, train and decode sections.

Torch-free, like ctc_recipe, so reading a recipe stays fast. The model section is one of two families, picked by
`model.arch`:

    las          Listen, Attend and Spell (seed 001 / S22–F23 starters): pBLSTM listener, LSTMCell speller
    transformer  conv-subsampled Transformer encoder-decoder with an optional CTC head (S24+ homework design)

`special_tokens(symbols)` finds <pad>/<sos>/<eos> in a profile's vocabulary (every semester names them differently).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.tasks.archs import arch_section
from pipeline.tasks.train_recipe import SchedulerConfig, SpecAugmentConfig, TrainConfig

# ---- vocabulary -------------------------------------------------------------------------------------------------

PAD_NAMES = ("<pad>", "[PAD]", "<|padding|>")
SOS_NAMES = ("<sos>", "[SOS]", "<|endoftext|>")
EOS_NAMES = ("<eos>", "[EOS]", "<|endoftext|>")


def _find(symbols: list[str], names: tuple[str, ...]) -> int | None:
    return next((i for i, s in enumerate(symbols) if s in names), None)


def special_tokens(symbols: list[str] | tuple[str, ...]) -> dict:
    """{"pad", "sos", "eos", "vocab_size"} for a profile's symbol list. A vocabulary without a padding symbol
    (S22/F22: <sos>, A–Z, ', space, <eos>) gets one appended after the last symbol: it is never predicted."""
    symbols = list(symbols)
    sos, eos = _find(symbols, SOS_NAMES), _find(symbols, EOS_NAMES)
    if sos is None or eos is None:
        raise ValueError(f"vocabulary has no start/end symbol (expected one of {SOS_NAMES} and {EOS_NAMES})")
    pad = _find(symbols, PAD_NAMES)
    vocab_size = len(symbols)
    if pad is None:
        pad, vocab_size = len(symbols), len(symbols) + 1
    return {"pad": pad, "sos": sos, "eos": eos, "vocab_size": vocab_size}


def output_symbols(symbols: list[str] | tuple[str, ...]) -> list[int]:
    """Indices a transcript may contain: every symbol that is not a bracketed special (<pad>, [MASK], …)."""
    return [i for i, s in enumerate(symbols) if not (len(s) > 1 and s[0] in "<[" and s[-1] in ">]")]


# ---- model --------------------------------------------------------------------------------------------------------

class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_dim: int = 28          # from the profile: 13/15/27/28-d MFCC or 80-d fbank
    vocab_size: int = 31         # from the profile's symbols (+1 when it has no pad symbol)
    pad: int = 0
    sos: int = 1
    eos: int = 2
    output_tokens: list[int] | None = None   # symbols the decoder may emit besides eos (None: all but pad/sos)


class LASConfig(_Model):
    arch: Literal["las"] = "las"
    # listener
    embed: Literal["none", "conv"] = "conv"     # conv: 2× Conv1d+BN+GELU over time before the LSTMs
    embed_channels: int = 128
    embed_kernel: int = 3
    listener_hidden: int = 256                 # per direction
    base_lstm_layers: int = 1
    pblstm_layers: int = Field(3, ge=0)        # each halves time: 3 → time reduction 8
    locked_dropout: float = 0.3
    # attention
    key_value_size: int = 128
    attention_heads: int = 1                   # 1 = single-head scaled dot product
    # speller
    embedding_size: int = 256
    speller_hidden: int = 512
    speller_layers: int = 2
    speller_dropout: float = 0.2
    tie_embeddings: bool = True
    init_uniform: float | None = 0.1           # LAS paper: uniform ±0.1; None = PyTorch defaults
    ctc_head: bool = False                     # CTC projection on the listener (train.ctc_weight weighs its loss)

    @model_validator(mode="after")
    def _check(self) -> "LASConfig":
        if self.key_value_size % self.attention_heads:
            raise ValueError(f"key_value_size {self.key_value_size} is not divisible by attention_heads "
                             f"{self.attention_heads}")
        if self.embed_kernel % 2 == 0:
            raise ValueError(f"embed_kernel must be odd (got {self.embed_kernel})")
        return self


class TransformerConfig(_Model):
    arch: Literal["transformer"] = "transformer"
    subsample: Literal[1, 2, 4] = 4            # conv front end: stride-2 Conv2d layers (time factor)
    conv_channels: int = 128
    d_model: int = 256
    heads: int = 4
    encoder_layers: int = 4
    decoder_layers: int = 4
    d_ff: int = 1024
    dropout: float = 0.1
    ctc_head: bool = True                      # a CTC projection on the encoder (train.ctc_weight weighs its loss)
    tie_embeddings: bool = True

    @model_validator(mode="after")
    def _check(self) -> "TransformerConfig":
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
        return self


ARCHS = {"las": LASConfig, "transformer": TransformerConfig}
PROFILE_KEYS = tuple(_Model.model_fields)  # input width and vocabulary: the train stage takes them from the profile


Seq2SeqModelConfig = arch_section(ARCHS, default="las", profile_keys=PROFILE_KEYS, facts="feature dim, vocabulary")


# ---- training -----------------------------------------------------------------------------------------------------

class TeacherForcingConfig(BaseModel):
    """The teacher-forcing rate for each epoch (seed 001's rules; `next_rate` in pipeline/training/teacher_forcing.py).

    constant  always `start`
    linear    after every `every`-th epoch (up to until_epoch) subtract `step`, never below `floor` (epochs are
              1-based; seed 001, 0-based: "epoch+1 % 20 == 0 … epoch < 80 and tf_rate > 0.4 → tf_rate -= 0.10")
    decay     once dev distance < dist_threshold, or epoch > after_epoch, multiply by `factor` each epoch down to
              `floor` (seed 001: "val_dist < 30 or epoch > 20 and tf_rate > 0.6 → tf_rate *= 0.985")
    """
    model_config = ConfigDict(extra="forbid")

    schedule: Literal["constant", "linear", "decay"] = "constant"
    start: float = Field(1.0, ge=0.0, le=1.0)
    floor: float = Field(0.4, ge=0.0, le=1.0)
    step: float = Field(0.1, ge=0.0)
    every: int = Field(20, ge=1)
    until_epoch: int | None = 80
    factor: float = Field(0.985, gt=0.0, le=1.0)
    dist_threshold: float | None = 30.0
    after_epoch: int | None = 20


class GuidedAttentionConfig(BaseModel):
    """Guided attention loss (Tachibana et al. 2017): penalize attention mass far from the diagonal,
    W[n, t] = 1 - exp(-(n/N - t/T)² / (2 sigma²)) for output step n of N and encoder frame t of T (each utterance's
    own lengths; padded steps and frames count nothing). loss += weight · decay^(epoch-1) · mean over real output steps
    of Σ_t W·A. On small data it pushes the speller off the "attend to the last frame, guess like a language model"
    local optimum; the decay lets the model leave the strict diagonal once it aligns. weight 0 = off."""
    model_config = ConfigDict(extra="forbid")

    weight: float = Field(0.0, ge=0.0)
    sigma: float = Field(0.2, gt=0.0)         # the paper's g: width of the allowed band, in fractions of the length
    decay: float = Field(1.0, gt=0.0, le=1.0)  # weight multiplier per epoch


class Seq2SeqTrainConfig(TrainConfig):
    # memory-aware batches: a batch grows until any bound would be exceeded (padded sizes: count × longest)
    max_frames_per_batch: int = 60000         # padded input frames
    max_tokens_per_batch: int = 12000         # padded target tokens
    max_batch_size: int = 64                  # utterances
    eval_max_frames: int = 120000
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(5e-6, ge=0.0)
    optimizer: Literal["adamw", "adam", "adamax", "adagrad", "sgd"] = "adam"
    scheduler: SchedulerConfig = Field(default_factory=lambda: SchedulerConfig(name="plateau", factor=0.5, patience=5))
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    ctc_weight: float = Field(0.0, ge=0.0, le=1.0)   # model with ctc_head: loss = (1-w)·CE + w·CTC
    guided_attention: GuidedAttentionConfig = Field(default_factory=GuidedAttentionConfig)
    teacher_forcing: TeacherForcingConfig = Field(default_factory=TeacherForcingConfig)
    specaugment: SpecAugmentConfig = Field(default_factory=SpecAugmentConfig)
    attention_plots: int = 3                  # dev utterances plotted (PNG) at each evaluated epoch; 0 = none
    eval_max_length: int = 600                # greedy dev decode stops here (characters)

    @model_validator(mode="after")
    def _no_batch_schedule(self) -> "Seq2SeqTrainConfig":
        if self.batch_schedule is not None:  # its batches grow to frame and token budgets, not to a count
            raise ValueError("batch_schedule is for hw1p2/hw3p2; hw4p2 batches are bounded by max_frames_per_batch "
                             "and max_tokens_per_batch: change those instead")
        return self


class Seq2SeqDecodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beam: int = Field(8, ge=1)                # 1 = greedy
    length_alpha: float = Field(1.0, ge=0.0)  # final score = log P / length^alpha (0 = raw log-probability)
    max_length: int = Field(600, ge=1)        # characters (S23 writeup: 550)
    batch_size: int = Field(16, ge=1)         # utterances decoded together (beam search: × beam rows)
    mode: Literal["attention", "ctc_greedy"] = "attention"  # ctc_greedy: the CTC head's best path
    ctc_weight: float = Field(0.0, ge=0.0, le=1.0)  # joint CTC/attention search: λ·CTC prefix + (1-λ)·attention
    length_bonus: float = 0.0                 # added per output character (with ctc_weight, ESPnet's penalty)


SECTIONS = {"model": Seq2SeqModelConfig, "train": Seq2SeqTrainConfig, "decode": Seq2SeqDecodeConfig}
