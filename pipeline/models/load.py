"""Rebuild a model from a checkpoint: the checkpoint names its model by `model_arch`, and ARCHS maps that name to
the file that builds it from the stored config (`build_from_dict`). The module paths are written out, not derived
from the name, so that the stage engine (which reads module names in the source) puts the model files into the
cache keys of the stages that load checkpoints, and only of those. Which family trains which arch:
pipeline/tasks/__init__.py."""
from __future__ import annotations

import importlib
from pathlib import Path

import torch

from pipeline.training.checkpoints import CheckpointError, load_checkpoint

ARCHS = {
    "mlp": "pipeline.models.mlp",
    "ctc_rnn": "pipeline.models.ctc_rnn",
    "dilated_conv": "pipeline.models.dilated_conv",
    "las": "pipeline.models.las",
    "transformer": "pipeline.models.transformer",
}


def load_model(checkpoint_path: str | Path | dict, device: str | torch.device | None = None) -> torch.nn.Module:
    """Rebuild the model from the config stored in the checkpoint (a path, or a checkpoint dict already loaded);
    returned in eval mode on `device` (default CPU; resolve a user's choice with pipeline.device.resolve_device)."""
    ckpt = checkpoint_path if isinstance(checkpoint_path, dict) else load_checkpoint(checkpoint_path)
    where = "checkpoint" if isinstance(checkpoint_path, dict) else checkpoint_path
    arch = ckpt.get("model_arch")
    if arch not in ARCHS:
        raise CheckpointError(f"{where}: unknown model_arch {arch!r} (known: {', '.join(ARCHS)})")
    model = importlib.import_module(ARCHS[arch]).build_from_dict(ckpt["model_config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(torch.device(device) if device is not None else "cpu").eval()
