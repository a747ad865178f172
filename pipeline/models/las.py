"""Listen, Attend and Spell (Chan et al. 2016), as in seed 001 and the S22–F23 HW4P2 starters.

    listener  [Conv1d embedding] → BiLSTM × base_lstm_layers → pBLSTM × pblstm_layers (each halves time, with
              locked dropout between) → key / value projections                      (B, T / 2^p, key_value_size)
    ctc head  optional Linear on the listener output (train.ctc_weight: joint CTC-attention training, which
              finds the alignment far sooner on small data; blank = the pad index)
    speller   LSTMCell × speller_layers fed [char embedding; previous context] → query → dot-product attention
              (single or multi-head, padded frames masked) → [hidden; context] → projection → tied output layer

The decoder is incremental (`start`, `step`, `reorder`), so greedy and beam search (pipeline/decoding/
attention_search.py) drive LAS and the Transformer the same way. `forward` is the teacher-forced training pass.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.tasks.seq2seq_recipe import LASConfig


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, max_len) bool, True at real positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class LockedDropout(nn.Module):
    """One dropout mask per sequence, shared across time (Gal & Ghahramani; the LAS starters' LockedDropout)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C)
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask


class ConvEmbedding(nn.Module):
    """Two Conv1d + BatchNorm + GELU layers over time (stride 1); padded frames are zeroed before every conv so
    they never leak into real frames."""

    def __init__(self, input_dim: int, channels: int, kernel: int):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv1d(input_dim, channels, kernel, padding=kernel // 2),
                                    nn.Conv1d(channels, channels, kernel, padding=kernel // 2)])
        self.norms = nn.ModuleList([nn.BatchNorm1d(channels), nn.BatchNorm1d(channels)])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        keep = padding_mask(lengths, x.shape[1])[:, None, :].to(x.dtype)   # (B, 1, T)
        h = x.transpose(1, 2)
        for conv, norm in zip(self.convs, self.norms):
            h = F.gelu(norm(conv(h * keep)))
        return (h * keep).transpose(1, 2)


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence's real frames in place, padding stays at the end (its own inverse)."""
    T = x.shape[1]
    t = torch.arange(T, device=x.device)[None, :]
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))


class MaskedBiLSTM(nn.Module):
    """A bidirectional LSTM whose outputs at real frames never see padding, like a packed nn.LSTM, but run on
    dense tensors: the backward direction reads each utterance reversed within its own length. (On CPU a packed
    LSTM's backward pass is quadratic in time — 20× slower on 2-s utterances.)"""

    def __init__(self, input_size: int, hidden: int):
        super().__init__()
        self.forward_lstm = nn.LSTM(input_size, hidden, batch_first=True)
        self.backward_lstm = nn.LSTM(input_size, hidden, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        ahead, _ = self.forward_lstm(x)
        behind, _ = self.backward_lstm(reverse_within_length(x, lengths))
        return torch.cat([ahead, reverse_within_length(behind, lengths)], dim=-1)


class PyramidalBLSTM(nn.Module):
    """Concatenate adjacent frames (halving time, dropping an odd last frame), then a BiLSTM."""

    def __init__(self, input_size: int, hidden: int):
        super().__init__()
        self.lstm = MaskedBiLSTM(input_size * 2, hidden)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        T2 = T // 2
        x = x[:, : T2 * 2].reshape(B, T2, C * 2)
        lengths = torch.clamp(lengths // 2, min=1)
        return self.lstm(x, lengths), lengths


class Listener(nn.Module):
    def __init__(self, cfg: LASConfig):
        super().__init__()
        self.embedding = ConvEmbedding(cfg.input_dim, cfg.embed_channels, cfg.embed_kernel) if cfg.embed == "conv" else None
        width = cfg.embed_channels if self.embedding is not None else cfg.input_dim
        self.base = nn.ModuleList([MaskedBiLSTM(width if i == 0 else cfg.listener_hidden * 2, cfg.listener_hidden)
                                   for i in range(cfg.base_lstm_layers)])
        self.pyramid = nn.ModuleList([PyramidalBLSTM(cfg.listener_hidden * 2, cfg.listener_hidden)
                                      for _ in range(cfg.pblstm_layers)])
        self.dropout = LockedDropout(cfg.locked_dropout)
        self.key = nn.Linear(cfg.listener_hidden * 2, cfg.key_value_size)
        self.value = nn.Linear(cfg.listener_hidden * 2, cfg.key_value_size)
        self.ctc = nn.Linear(cfg.listener_hidden * 2, cfg.vocab_size) if cfg.ctc_head else None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        if self.embedding is not None:
            x = self.embedding(x, lengths)
        h = x
        for i, layer in enumerate(self.base):
            h = layer(self.dropout(h) if i else h, lengths)
        for layer in self.pyramid:
            h, lengths = layer(self.dropout(h), lengths)
        h = self.dropout(h)
        T = int(lengths.max())
        h = h[:, :T]
        ctc = F.log_softmax(self.ctc(h).float(), dim=-1) if self.ctc is not None else None
        return self.key(h), self.value(h), lengths, ctc


class DotProductAttention(nn.Module):
    """Scaled dot-product attention of one query per utterance over the listener's keys; heads split the key/value
    width (heads=1: the plain LAS attention). Padded frames get zero weight."""

    def __init__(self, query_size: int, kv_size: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, kv_size // heads
        self.query = nn.Linear(query_size, kv_size)
        self.out = nn.Linear(kv_size, kv_size) if heads > 1 else nn.Identity()

    def forward(self, hidden: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor):
        B, T, _ = keys.shape
        q = self.query(hidden).view(B, self.heads, 1, self.head_dim)
        k = keys.view(B, T, self.heads, self.head_dim).transpose(1, 2)            # (B, H, T, d)
        v = values.view(B, T, self.heads, self.head_dim).transpose(1, 2)
        energy = (q @ k.transpose(-1, -2)).squeeze(2) / math.sqrt(self.head_dim)  # (B, H, T)
        energy = energy.masked_fill(~mask[:, None, :], float("-inf"))
        weights = torch.softmax(energy, dim=-1)
        context = (weights.unsqueeze(2) @ v).squeeze(2).reshape(B, -1)            # (B, H·d)
        return self.out(context), weights.mean(dim=1)                             # weights averaged over heads


class Speller(nn.Module):
    def __init__(self, cfg: LASConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embedding_size, padding_idx=cfg.pad)
        sizes = [cfg.embedding_size + cfg.key_value_size] + [cfg.speller_hidden] * (cfg.speller_layers - 1)
        self.cells = nn.ModuleList([nn.LSTMCell(size, cfg.speller_hidden) for size in sizes])
        self.dropout = nn.Dropout(cfg.speller_dropout)
        self.attention = DotProductAttention(cfg.speller_hidden, cfg.key_value_size, cfg.attention_heads)
        self.project = nn.Linear(cfg.speller_hidden + cfg.key_value_size, cfg.embedding_size)
        self.classifier = nn.Linear(cfg.embedding_size, cfg.vocab_size)
        if cfg.tie_embeddings:
            self.classifier.weight = self.embedding.weight

    def step(self, state: dict, tokens: torch.Tensor) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """One output step: logits (N, V), the new state and the attention weights (N, T)."""
        x = torch.cat([self.embedding(tokens), state["context"]], dim=-1)
        hidden = []
        for layer, cell in enumerate(self.cells):
            h, c = cell(x, state["hidden"][layer])
            hidden.append((h, c))
            x = self.dropout(h)
        context, weights = self.attention(h, state["keys"], state["values"], state["mask"])
        logits = self.classifier(F.gelu(self.project(torch.cat([h, context], dim=-1))))
        return logits, {**state, "hidden": hidden, "context": context}, weights


class LAS(nn.Module):
    arch = "las"

    def __init__(self, cfg: LASConfig):
        super().__init__()
        self.cfg = cfg
        self.listener = Listener(cfg)
        self.speller = Speller(cfg)
        if cfg.init_uniform:
            for name, p in self.named_parameters():
                if "norms" not in name:
                    nn.init.uniform_(p, -cfg.init_uniform, cfg.init_uniform)

    # ---- incremental decoding interface (shared with the Transformer) ----
    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> dict:
        keys, values, out_lengths, ctc = self.listener(x, lengths)
        memory = {"keys": keys, "values": values, "mask": padding_mask(out_lengths, keys.shape[1]),
                  "lengths": out_lengths}
        if ctc is not None:  # training's CTC loss and joint CTC/attention decoding
            memory["ctc_log_probs"] = ctc
        return memory

    def start(self, memory: dict) -> dict:
        memory = {k: v for k, v in memory.items() if k != "ctc_log_probs"}
        B = memory["keys"].shape[0]
        zeros = memory["keys"].new_zeros(B, self.cfg.speller_hidden)
        return {**memory, "hidden": [(zeros, zeros) for _ in self.speller.cells],
                "context": memory["values"].new_zeros(B, self.cfg.key_value_size)}

    def step(self, state: dict, tokens: torch.Tensor):
        return self.speller.step(state, tokens)

    @staticmethod
    def reorder(state: dict, index: torch.Tensor) -> dict:
        """Keep rows `index` of every per-row tensor (beam search: which hypotheses survive)."""
        out = {}
        for key, value in state.items():
            if key == "hidden":
                out[key] = [(h[index], c[index]) for h, c in value]
            else:
                out[key] = value[index]
        return out

    # ---- training ----
    def forward(self, x: torch.Tensor, lengths: torch.Tensor, y_in: torch.Tensor, teacher_forcing: float = 1.0,
                generator: torch.Generator | None = None) -> dict:
        """Teacher-forced pass: logits (B, L, V) for targets y_in (B, L) = [sos] + y; with teacher_forcing < 1 each
        step feeds, per utterance, the model's own previous argmax with probability 1 - teacher_forcing."""
        memory = self.encode(x, lengths)
        state = self.start(memory)
        mask = state["mask"]
        logits, attention = [], []
        tokens = y_in[:, 0]
        for t in range(y_in.shape[1]):
            if t > 0:
                tokens = y_in[:, t]
                if teacher_forcing < 1.0:
                    own = torch.rand(tokens.shape[0], generator=generator).to(tokens.device) >= teacher_forcing
                    tokens = torch.where(own, logits[-1].argmax(dim=-1), tokens)
            step_logits, state, weights = self.step(state, tokens)
            logits.append(step_logits)
            attention.append(weights)
        out = {"logits": torch.stack(logits, dim=1), "attention": torch.stack(attention, dim=1),
               "memory_mask": mask, "encoder_lengths": state["lengths"]}
        if "ctc_log_probs" in memory and self.training:  # dev loss stays cross-entropy, as before
            out["ctc_log_probs"] = memory["ctc_log_probs"]
        return out


def build_from_dict(config: dict) -> LAS:
    return LAS(LASConfig(**config))
