"""HW3P2 dilated-convolution CTC model (seed 003): WaveNet-style stacks of residual dilated 1-D convolutions.

    x (B, T, F), lengths (B,)
      → front end     `subsample` = 1: Conv1d k=1 (F → C); 2 / 4: one / two stride-2 Conv1d k=3 layers (+ GELU)
      → num_stacks ×  residual blocks with dilations 1, 2, 4 … max_dilation, each
                      h = h + Dropout(Conv1d_dilated(act([BatchNorm](h))))      (BatchNorm optional: `batchnorm`)
      → head          Linear (or Linear → act → Dropout → Linear when head_hidden > 0), on real frames only
      → log_softmax (B, T', C), out_lengths (B,)

Padded frames are zeroed after every layer, and the BatchNorm normalizes over real frames only, so an utterance
gives the same output alone or padded to any length in a batch, in training as in eval mode (seed 003's padding
question then has one answer by construction). `receptive_field()` is the span of input frames one output sees.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.models.ctc_rnn import strided_length, time_mask
from pipeline.tasks.ctc_recipe import DilatedConvConfig

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
FRAME_MS = 10.0  # the competitions' MFCC hop


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over the real frames of (B, C, T) only: padding neither shifts the statistics nor gets values."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        flat = x.transpose(1, 2)[mask]                      # (real frames, C)
        out = torch.zeros_like(x.transpose(1, 2))
        if len(flat) > 1 or (len(flat) == 1 and not self.training):
            out[mask] = super().forward(flat).to(out.dtype)
        elif len(flat) == 1:  # batch statistics of one frame do not exist: use the running ones
            out[mask] = F.batch_norm(flat, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                                     self.eps).to(out.dtype)
        return out.transpose(1, 2)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilation: int, dropout: float, activation: str,
                 batchnorm: bool):
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.norm = MaskedBatchNorm1d(channels) if batchnorm else None
        self.act = ACTIVATIONS[activation]()
        self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation,
                              padding=dilation * (kernel_size - 1) // 2)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.norm(h, mask) if self.norm is not None else h
        return (h + self.drop(self.conv(self.act(x)))) * mask[:, None, :]


class DilatedConvCTC(nn.Module):
    def __init__(self, cfg: DilatedConvConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.channels
        self.strides = [2] * (cfg.subsample.bit_length() - 1)          # 1 → [], 2 → [2], 4 → [2, 2]
        if self.strides:
            self.front = nn.ModuleList(nn.Conv1d(cfg.input_dim if i == 0 else C, C, 3, stride=2, padding=1)
                                       for i in range(len(self.strides)))
        else:
            self.front = nn.ModuleList([nn.Conv1d(cfg.input_dim, C, 1)])
        self.blocks = nn.ModuleList(ResidualBlock(C, cfg.kernel_size, d, cfg.dropout, cfg.activation, cfg.batchnorm)
                                    for d in cfg.dilations())
        act = ACTIVATIONS[cfg.activation]
        self.head = (nn.Linear(C, cfg.num_classes) if not cfg.head_hidden else
                     nn.Sequential(nn.Linear(C, cfg.head_hidden), act(), nn.Dropout(cfg.dropout),
                                   nn.Linear(cfg.head_hidden, cfg.num_classes)))

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for _ in self.strides:
            lengths = strided_length(lengths, 3, 2)
        return lengths

    def receptive_field(self) -> int:
        """Input frames one output frame depends on: 1 + Σ (k − 1)·dilation·(product of the strides before)."""
        frames, jump = 1, 1
        for stride in self.strides:
            frames, jump = frames + 2 * jump, jump * stride
        for d in self.cfg.dilations():
            frames += (self.cfg.kernel_size - 1) * d * jump
        return frames

    def describe(self) -> dict:
        frames = self.receptive_field()
        return {"receptive_field_frames": frames, "receptive_field_ms": frames * FRAME_MS,
                "residual_blocks": len(self.blocks)}

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = lengths.to(x.device)
        h = x.transpose(1, 2) * time_mask(lengths, x.shape[1])[:, None, :]   # (B, F, T), padding zeroed
        for conv in self.front:
            h = conv(h)
            lengths = strided_length(lengths, 3, 2) if self.strides else lengths
            h = (F.gelu(h) if self.strides else h) * time_mask(lengths, h.shape[-1])[:, None, :]
        mask = time_mask(lengths, h.shape[-1])
        for block in self.blocks:
            h = block(h, mask)
        h = h.transpose(1, 2)                                                    # (B, T', C)
        logits = h.new_zeros(h.shape[0], h.shape[1], self.cfg.num_classes)
        logits[mask] = self.head(h[mask]).to(logits.dtype)
        return logits.log_softmax(dim=-1), lengths


def build_from_dict(config: dict) -> DilatedConvCTC:
    """The model a checkpoint describes (load_model, model_arch "dilated_conv")."""
    return DilatedConvCTC(DilatedConvConfig(**config))
