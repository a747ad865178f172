"""Transformer encoder-decoder for character ASR (the S24+ HW4P2 design), with an optional CTC head.

    front end  Conv2d subsampling (stride-2 layers: time ÷ 1/2/4) → Linear → × √d_model + sinusoidal positions
    encoder    pre-norm nn.TransformerEncoder, padded frames masked                         (B, T', d_model)
    decoder    char embedding + positions → pre-norm layers (causal self-attention, cross-attention that
               returns its weights for the attention plots, feed-forward) → output layer tied to the embedding
    ctc head   Linear(d_model → vocab) on the encoder; CTC's blank is the pad index (pad is never a target)

Same incremental interface as LAS (`encode`, `start`, `step`, `reorder`): `step` re-runs the decoder over the
prefix (no key/value cache: simple, and cheap next to the encoder for character-length outputs).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.tasks.seq2seq_recipe import TransformerConfig


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, max_len) bool, True at real positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def sinusoids(length: int, dim: int, device=None) -> torch.Tensor:
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)
    return table


class ConvSubsampling(nn.Module):
    """ESPnet-style: Conv2d(k3, stride 2, no padding) + ReLU per halving over (time, feature), then a Linear.
    Output frame t only sees input frames 2t..2t+2 per layer, so with exact output lengths padding never leaks in."""

    def __init__(self, input_dim: int, channels: int, d_model: int, factor: int):
        super().__init__()
        self.layers = int(math.log2(factor))
        convs, width, in_ch = [], input_dim, 1
        for _ in range(self.layers):
            convs += [nn.Conv2d(in_ch, channels, 3, stride=2), nn.ReLU()]
            width, in_ch = (width - 3) // 2 + 1, channels
        self.convs = nn.Sequential(*convs)
        self.out = nn.Linear(in_ch * width, d_model)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for _ in range(self.layers):
            lengths = torch.div(lengths - 3, 2, rounding_mode="floor") + 1
        return lengths.clamp(min=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x * padding_mask(lengths, x.shape[1])[:, :, None].to(x.dtype)
        if self.layers:
            x = self.convs(x.unsqueeze(1))                        # (B, C, T', F')
            x = x.permute(0, 2, 1, 3).flatten(2)                  # (B, T', C·F')
        return self.out(x), self.output_lengths(lengths)


class DecoderLayer(nn.Module):
    """Pre-norm: causal self-attention, cross-attention (weights kept for plots), feed-forward."""

    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.norms = nn.ModuleList([nn.LayerNorm(d_model) for _ in range(3)])
        self.dropout = nn.Dropout(dropout)

    def forward(self, y, memory, causal, memory_padding, need_weights: bool = False):
        h = self.norms[0](y)
        y = y + self.dropout(self.self_attn(h, h, h, attn_mask=causal, need_weights=False)[0])
        h = self.norms[1](y)
        attended, weights = self.cross_attn(h, memory, memory, key_padding_mask=memory_padding,
                                            need_weights=need_weights)
        y = y + self.dropout(attended)
        y = y + self.dropout(self.ff(self.norms[2](y)))
        return y, weights


class Transformer(nn.Module):
    arch = "transformer"

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.front = ConvSubsampling(cfg.input_dim, cfg.conv_channels, cfg.d_model, cfg.subsample)
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.heads, cfg.d_ff, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.encoder_layers, norm=nn.LayerNorm(cfg.d_model),
                                             enable_nested_tensor=False)
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad)
        self.decoder = nn.ModuleList([DecoderLayer(cfg.d_model, cfg.heads, cfg.d_ff, cfg.dropout)
                                      for _ in range(cfg.decoder_layers)])
        self.decoder_norm = nn.LayerNorm(cfg.d_model)
        self.classifier = nn.Linear(cfg.d_model, cfg.vocab_size)
        if cfg.tie_embeddings:
            self.classifier.weight = self.embedding.weight
        self.ctc = nn.Linear(cfg.d_model, cfg.vocab_size) if cfg.ctc_head else None
        self.dropout = nn.Dropout(cfg.dropout)
        nn.init.normal_(self.embedding.weight, std=cfg.d_model ** -0.5)

    def add_positions(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x * math.sqrt(self.cfg.d_model) + sinusoids(x.shape[1], self.cfg.d_model, x.device))

    # ---- incremental decoding interface (shared with LAS) ----
    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> dict:
        h, out_lengths = self.front(x, lengths)
        mask = padding_mask(out_lengths, h.shape[1])
        h = self.encoder(self.add_positions(h), src_key_padding_mask=~mask)
        memory = {"memory": h, "mask": mask, "lengths": out_lengths}
        if self.ctc is not None:  # training's CTC loss and joint CTC/attention decoding
            memory["ctc_log_probs"] = F.log_softmax(self.ctc(h).float(), dim=-1)
        return memory

    def decode(self, memory: dict, y_in: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, L, V) for decoder inputs y_in (B, L); cross-attention of the last layer (B, L, T') if asked."""
        L = y_in.shape[1]
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=y_in.device), diagonal=1)
        y = self.add_positions(self.embedding(y_in))
        weights = None
        for i, layer in enumerate(self.decoder):
            y, weights = layer(y, memory["memory"], causal, ~memory["mask"],
                               need_weights=need_weights and i == len(self.decoder) - 1)
        return self.classifier(self.decoder_norm(y)), weights

    def start(self, memory: dict) -> dict:
        memory = {k: v for k, v in memory.items() if k != "ctc_log_probs"}
        return {**memory, "prefix": memory["mask"].new_zeros(memory["mask"].shape[0], 0, dtype=torch.long)}

    def step(self, state: dict, tokens: torch.Tensor):
        prefix = torch.cat([state["prefix"], tokens[:, None]], dim=1)
        logits, weights = self.decode(state, prefix, need_weights=True)
        return logits[:, -1], {**state, "prefix": prefix}, weights[:, -1]

    @staticmethod
    def reorder(state: dict, index: torch.Tensor) -> dict:
        return {key: value[index] for key, value in state.items()}

    # ---- training ----
    def forward(self, x: torch.Tensor, lengths: torch.Tensor, y_in: torch.Tensor, teacher_forcing: float = 1.0,
                generator: torch.Generator | None = None) -> dict:
        """Teacher-forced logits (B, L, V) (a Transformer always trains teacher-forced), CTC log-probs
        (B, T', V) when the model has a CTC head, and the last layer's cross-attention (B, L, T')."""
        memory = self.encode(x, lengths)
        # no target padding mask: causal attention keeps real positions from seeing the padded tail
        logits, weights = self.decode(memory, y_in, need_weights=True)
        out = {"logits": logits, "attention": weights, "memory_mask": memory["mask"],
               "encoder_lengths": memory["lengths"]}
        if "ctc_log_probs" in memory:
            out["ctc_log_probs"] = memory["ctc_log_probs"]
        return out


def build_from_dict(config: dict) -> Transformer:
    return Transformer(TransformerConfig(**config))
