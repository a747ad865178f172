"""Atomic file writes and file hashing, in one place (torch-free; numpy and torch are imported only when used).

An atomic write goes to a temporary sibling `<name>.<pid>.tmp` (same directory, so the rename stays on one file
system; never matching `*.pt`, `*.png`, `*.npy`, … so globs over outputs skip it), optionally fsynced, then
`os.replace`d onto the target: a reader sees the old file or the whole new one. If the writer fails, the
temporary file is removed and the error re-raised, the old file untouched.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable


def temp_path(path: Path) -> Path:
    """The temporary sibling an atomic write of `path` goes through (per process: concurrent writers do not clash)."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def atomic_write(path: Path, write: Callable[[Path], object], *, fsync: bool = False) -> Path:
    """`write(tmp)` writes the whole content to `tmp`; then (fsync: flushed to disk) it is renamed onto `path`."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str, *, fsync: bool = False) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "w") as handle:
            handle.write(text)

    return atomic_write(path, write, fsync=fsync)


def write_json_atomic(path: Path, data: Any, *, indent: int | None = 2, newline: bool = True,
                      fsync: bool = True) -> Path:
    """json.dumps(data, indent=indent, default=str) (+ "\\n"); fsynced by default (stage outputs and markers)."""
    text = json.dumps(data, indent=indent, default=str) + ("\n" if newline else "")
    return write_text_atomic(path, text, fsync=fsync)


def update_json_atomic(path: Path, **fields) -> dict:
    """Add or replace top-level fields of a JSON object file (created when missing); returns the new object."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(fields)
    write_json_atomic(path, data)
    return data


def save_figure(fig, path: Path, dpi: int = 100) -> Path:
    """A matplotlib figure as an atomic PNG (the folder made if needed); the figure is closed."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
        plt.close(fig)
    return path


def save_npy_atomic(path: Path, array, *, fsync: bool = False) -> Path:
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.save would append ".npy" to a name not ending in it
            np.save(handle, array)

    return atomic_write(path, write, fsync=fsync)


def torch_save_atomic(obj, path: Path, *, fsync: bool = False) -> Path:
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp), fsync=fsync)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
