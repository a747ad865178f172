"""Which device a run computes on: `--device auto | cpu | cuda` (auto = CUDA when present).

Imports torch only when it must (the CLI validates the choice without it unless CUDA has to be probed).
"""
from __future__ import annotations

from pipeline.errors import AsrpipeError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


class DeviceError(AsrpipeError, ValueError):
    """A device choice this machine cannot serve (one line saying what to use instead)."""


def check_choice(choice: str | None) -> str:
    """The normalized choice ('auto' for None); 'cuda:N' is accepted as a particular GPU."""
    value = (choice or "auto").strip().lower()
    base, _, index = value.partition(":")
    if base not in DEVICE_CHOICES or (index and (base != "cuda" or not index.isdigit())):
        raise DeviceError(f"--device {choice}: expected one of {' | '.join(DEVICE_CHOICES)} (or cuda:N)")
    return value


def resolve_device(choice: str | None = None):
    """torch.device for a choice: 'auto' → cuda if available else cpu; 'cuda' with no usable GPU is a DeviceError."""
    import torch

    value = check_choice(choice)
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value.startswith("cuda"):
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__} has no CUDA build" if torch.version.cuda is None else \
                "no GPU is visible (check CUDA_VISIBLE_DEVICES / nvidia-smi)"
            raise DeviceError(f"--device {value}: CUDA is not available here ({build}); use --device cpu or auto")
        device = torch.device(value)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {value}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return device
    return torch.device("cpu")
