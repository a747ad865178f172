"""HW1P2 frame classifier: an MLP over a flattened context window (seeds 000 and 002).

    x (B, (2c+1)·F) → [Linear → BatchNorm? → activation → Dropout?] × num_layers → Linear → logits (B, classes)

The hidden widths, where BatchNorm and dropout go, and the parameter count all come from MLPConfig
(pipeline/tasks/frames_recipe.py), so the planner's count and the built model agree by construction.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from pipeline.tasks.frames_recipe import MLPConfig


def activation(cfg: MLPConfig) -> nn.Module:
    if cfg.activation == "leakyrelu":
        return nn.LeakyReLU(cfg.leaky_slope)
    return {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "softplus": nn.Softplus, "tanh": nn.Tanh}[cfg.activation]()


class FrameMLP(nn.Module):
    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        fan_in = cfg.window_dim
        for i, width in enumerate(cfg.hidden_widths()):
            layers.append(nn.Linear(fan_in, width))
            if cfg.batch_norm_at(i):
                layers.append(nn.BatchNorm1d(width))
            layers.append(activation(cfg))
            if cfg.dropout_at(i) > 0:
                layers.append(nn.Dropout(cfg.dropout_at(i)))
            fan_in = width
        layers.append(nn.Linear(fan_in, cfg.num_classes))
        self.net = nn.Sequential(*layers)
        initialize(self, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def initialize(model: nn.Module, cfg: MLPConfig) -> None:
    """Weights of every Linear by cfg.init (biases zeroed); "default" keeps PyTorch's own init."""
    if cfg.init == "default":
        return
    leaky = cfg.activation == "leakyrelu"
    for module in model.modules():
        if not isinstance(module, nn.Linear):
            continue
        weight = module.weight
        if cfg.init == "kaiming_normal":
            nn.init.kaiming_normal_(weight, a=cfg.leaky_slope if leaky else 0.0,
                                    nonlinearity="leaky_relu" if leaky else "relu")
        elif cfg.init == "kaiming_uniform":
            nn.init.kaiming_uniform_(weight, a=cfg.leaky_slope if leaky else 0.0,
                                     nonlinearity="leaky_relu" if leaky else "relu")
        elif cfg.init == "xavier_normal":
            nn.init.xavier_normal_(weight)
        elif cfg.init == "xavier_uniform":
            nn.init.xavier_uniform_(weight)
        else:  # "uniform": U(±1/√fan_in); the starters' bare uniform_() (U(0, 1)) does not train
            bound = 1.0 / math.sqrt(weight.shape[1])
            nn.init.uniform_(weight, -bound, bound)
        nn.init.zeros_(module.bias)


def build_from_dict(config: dict) -> FrameMLP:
    """The model a checkpoint describes (checkpoints.load_model, model_arch "mlp")."""
    return FrameMLP(MLPConfig(**config))
