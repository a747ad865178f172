"""pipeline.files: atomic writes (old content kept and no temporary file left when the writer fails) and sha256."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.files import (atomic_write, save_npy_atomic, sha256_file, temp_path, torch_save_atomic,
                            write_json_atomic, write_text_atomic)
from pipeline.training.checkpoints import atomic_write_json


def test_replaces_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    assert atomic_write(target, lambda tmp: Path(tmp).write_text("new")) == target
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


@pytest.mark.parametrize("fsync", [False, True])
def test_writer_failure_keeps_old_content_and_leaves_no_temp_file(tmp_path, fsync):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def half_write(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_write, fsync=fsync)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_failure_before_anything_is_written(tmp_path):
    target = tmp_path / "new.json"
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, lambda tmp: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert not list(tmp_path.iterdir())


def test_temp_name_is_a_per_process_sibling_that_output_globs_skip(tmp_path):
    tmp = temp_path(tmp_path / "epoch003.pt")
    assert tmp.parent == tmp_path and tmp.name == f"epoch003.pt.{os.getpid()}.tmp"
    assert tmp.match("*.tmp") and not tmp.match("*.pt")


DATA = {"b": [1, 2.5, None], "a": {"nested": True}, "text": "café ✓", "path": Path("/x/y")}


def test_json_bytes_as_the_hand_written_writers_made_them(tmp_path):
    path = tmp_path / "x.json"
    write_json_atomic(path, DATA)  # the engine's manifests and markers, stage outputs, kaggle download records
    assert path.read_text() == json.dumps(DATA, indent=2, sort_keys=False, default=str) + "\n"
    write_json_atomic(path, {"path": "/data"}, indent=None, fsync=False)  # download's local_data.json
    assert path.read_text() == json.dumps({"path": "/data"}) + "\n"
    plain = {k: v for k, v in DATA.items() if k != "path"}
    atomic_write_json(path, plain)  # training: history.json, checkpoints/index.json, metrics.json
    assert path.read_text() == json.dumps(plain, indent=1)


def test_text_npy_and_torch_wrappers(tmp_path):
    write_text_atomic(tmp_path / "t.json", '["a"]')
    assert (tmp_path / "t.json").read_text() == '["a"]'
    array = np.arange(12, dtype=np.int32).reshape(3, 4)
    save_npy_atomic(tmp_path / "a.npy", array)
    with open(tmp_path / "b.npy", "wb") as handle:
        np.save(handle, array)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    torch = pytest.importorskip("torch")
    torch_save_atomic({"w": torch.ones(2)}, tmp_path / "m.pt")
    assert torch.equal(torch.load(tmp_path / "m.pt")["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npy", "m.pt", "t.json"]


def test_sha256_file_over_several_chunks(tmp_path):
    blob = os.urandom((1 << 20) * 2 + 12345)
    path = tmp_path / "big.bin"
    path.write_bytes(blob)
    assert sha256_file(path) == hashlib.sha256(blob).hexdigest()
    assert sha256_file(path, chunk=4096) == hashlib.sha256(blob).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_files_module_is_torch_free():
    import subprocess
    import sys

    code = "import sys, pipeline.files; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
