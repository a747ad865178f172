"""HW3P2 CTC model: conv / ResNet embedding → stacked BiLSTM → MLP head → log-probs over the CTC outputs.

The seed-004 recipe family (ResNet BasicBlock embedding with stride 2, 4×BiLSTM-256, BN+dropout MLP head).

    x (B, T, F), lengths (B,)
      → embedding   Conv1d stack or 1-D ResNet BasicBlocks; the first `downsample` layers have stride 2
      → BiLSTM      packed sequences (padding never enters the recurrence)
      → head        Linear → BatchNorm → GELU/ReLU → Dropout → Linear, on the real frames only
      → log_softmax (B, T', C), out_lengths (B,)

Padded frames are zeroed after every conv layer, so an utterance gives the same output alone or padded in a
batch (eval mode), and the head's BatchNorm sees real frames only.
"""
from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pipeline.tasks.ctc_recipe import CTCRNNConfig


def strided_length(lengths: torch.Tensor, kernel_size: int, stride: int) -> torch.Tensor:
    """Output length of a Conv1d with padding kernel_size // 2 (PyTorch's formula)."""
    padding = kernel_size // 2
    return torch.div(lengths + 2 * padding - kernel_size, stride, rounding_mode="floor") + 1


def time_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, T) bool, True on real frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class ConvLayer(nn.Module):
    """Conv1d → BN → GELU → Dropout, on (B, C, T)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, dropout: float):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm1d(c_out)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.drop(F.gelu(self.bn(self.conv(x))))
        lengths = strided_length(lengths, self.kernel_size, self.stride)
        return x * time_mask(lengths, x.shape[-1])[:, None, :], lengths


class BasicBlock1d(nn.Module):
    """torchvision's ResNet BasicBlock in 1-D (conv-bn-relu-conv-bn + shortcut, relu), with dropout."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, dropout: float):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        pad = kernel_size // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel_size, stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel_size, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.drop = nn.Dropout(dropout)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            # kernel 1 / stride s keeps frame t ↔ output t // s, the same alignment as the padded k-conv
            self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_lengths = strided_length(lengths, self.kernel_size, self.stride)
        h = self.conv1(x)
        mask = time_mask(out_lengths, h.shape[-1])[:, None, :]
        h = F.relu(self.bn1(h)) * mask
        h = self.drop(self.bn2(self.conv2(h)))
        return F.relu(h + self.shortcut(x)) * mask, out_lengths


class CTCRNN(nn.Module):
    def __init__(self, cfg: CTCRNNConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.ModuleList(self._embedding_layers(cfg))
        self.lstm = nn.LSTM(
            cfg.embed_channels, cfg.lstm_hidden, num_layers=cfg.lstm_layers, batch_first=True,
            bidirectional=True, dropout=cfg.lstm_dropout if cfg.lstm_layers > 1 else 0.0,
        )
        act = nn.GELU() if cfg.head_activation == "gelu" else nn.ReLU()
        self.head = nn.Sequential(
            nn.Linear(2 * cfg.lstm_hidden, cfg.head_hidden),
            nn.BatchNorm1d(cfg.head_hidden) if cfg.head_norm else nn.Identity(),
            act,
            nn.Dropout(cfg.head_dropout),
            nn.Linear(cfg.head_hidden, cfg.num_classes),
        )
        if cfg.init == "kaiming":
            self._kaiming_init()

    @staticmethod
    def _embedding_layers(cfg: CTCRNNConfig) -> list[nn.Module]:
        C, k = cfg.embed_channels, cfg.kernel_size
        stride = lambda i: 2 if i < cfg.downsample else 1  # noqa: E731
        if cfg.embed == "conv":
            return [ConvLayer(cfg.input_dim if i == 0 else C, C, k, stride(i), cfg.embed_dropout) for i in range(cfg.embed_layers)]
        stem = ConvLayer(cfg.input_dim, C, k, 1, 0.0)
        return [stem] + [BasicBlock1d(C, C, k, stride(i), cfg.embed_dropout) for i in range(cfg.embed_layers)]

    def _kaiming_init(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for layer in self.embedding:
            lengths = strided_length(lengths, layer.kernel_size, layer.stride)
        return lengths

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = lengths.to(x.device)
        h = x.transpose(1, 2) * time_mask(lengths, x.shape[1])[:, None, :]  # (B, F, T), padding zeroed
        for layer in self.embedding:
            h, lengths = layer(h, lengths)
        h = h.transpose(1, 2)  # (B, T', C)

        packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_out, _ = self.lstm(packed)
        h, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=h.shape[1])

        mask = time_mask(lengths, h.shape[1])
        logits = h.new_zeros(h.shape[0], h.shape[1], self.cfg.num_classes)
        logits[mask] = self.head(h[mask]).to(logits.dtype)
        return logits.log_softmax(dim=-1), lengths


def build_from_dict(config: dict) -> CTCRNN:
    """The model a checkpoint describes (checkpoints.load_model, model_arch "ctc_rnn")."""
    return CTCRNN(CTCRNNConfig(**config))
