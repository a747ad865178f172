"""`asrpipe runs`: the experiment table from the run folders, with real train runs on the embedded demo-hw3p2
(quick and full, one killed mid-run by SIGKILL), through the real CLI; `--quick` and `--note` on the way."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.runs import collect, table

REPO = Path(__file__).resolve().parent.parent
TASK = "demo-hw3p2"


def asrpipe(*args: str, artifacts: Path, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "cli.main", *args, "--artifacts", str(artifacts)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"})
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def train(artifacts: Path, *args: str) -> subprocess.CompletedProcess:
    return asrpipe("train", "--task", TASK, "--config", "tiny", "--wandb", "off", *args, artifacts=artifacts)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs") / "artifacts"
    train(root, "--quick", "--quick-fraction", "0.1", "--note", "tiny quick")
    train(root, "--set", "train.epochs=3", "--set", "train.quick=0.1", "--set", "train.lr=2e-2")
    train(root)  # a full run: all 400 utterances
    # a run killed mid-training: "running" while it holds its lock, "incomplete" once killed
    cmd = [sys.executable, "-m", "cli.main", "train", "--task", TASK, "--config", "tiny", "--wandb", "off",
           "--set", "train.epochs=60", "--set", "train.quick=0.1", "--artifacts", str(root)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    histories = lambda: [p for p in (root / TASK / "train").glob("*e60*/history.json")]  # noqa: E731
    while not histories() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    states_while_running = {row["dir"]: row["state"] for row in collect(root, TASK)}
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return root, states_while_running


def rows_of(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_every_run_is_listed_best_first_with_its_state(artifacts):
    root, while_running = artifacts
    rows = rows_of(asrpipe("runs", "--task", TASK, "--format", "csv", artifacts=root).stdout)
    assert len(rows) == 4
    by_epochs = {row["epochs"]: row for row in rows}
    killed = next(row for row in rows if row["epochs"].endswith("/60"))
    assert killed["state"] == "incomplete" and not (Path(killed["dir"]) / ".done").exists()
    assert while_running[killed["dir"]] == "running"
    assert by_epochs["3/3"]["state"] == "complete" and by_epochs["3/3"]["quick"] == "quick"
    full = next(row for row in rows if row["quick"] == "full")
    assert full["epochs"] == "1/1" and "quick" not in full["dir"]
    quick = next(row for row in rows if row["note"])
    assert quick["note"] == "tiny quick" and quick["quick"] == "quick" and "quick0.1" in quick["dir"]
    assert {row["config"] for row in rows} == {"tiny"}
    assert by_epochs["3/3"]["overrides"] == "train.epochs=3 train.quick=0.1 train.lr=2e-2"
    assert all(row["model"].startswith("ctc_rnn resnet16x1") and int(row["params"]) > 0 for row in rows)
    bests = [float(row["best dev_lev"]) for row in rows if row["best dev_lev"]]
    assert bests == sorted(bests) and len(bests) == 4
    assert float(rows[0]["best dev_lev"]) == min(bests)


def test_the_table_filters_by_config_and_key(artifacts):
    root, _ = artifacts
    everything = table(collect(root, TASK))
    key = everything["key"].iloc[-1]
    assert table(collect(root, TASK), key=key[:6])["key"].tolist() == [key]
    assert len(table(collect(root, TASK), config="demo")) == 0
    text = asrpipe("runs", "--task", TASK, "--config", "tiny", "--format", "md", artifacts=root).stdout
    lines = text.strip().splitlines()
    assert lines[0].startswith("| key") and "best dev_lev" in lines[0] and len(lines) == 2 + 4


def test_the_curves_png_has_a_line_per_run(artifacts, tmp_path):
    import matplotlib.image

    root, _ = artifacts
    out = tmp_path / "curves.png"
    shown = asrpipe("runs", "--task", TASK, "--plot", str(out), artifacts=root).stdout
    assert f"curves: {out}" in shown and "4 train runs" in shown
    pixels = matplotlib.image.imread(out)
    assert pixels.shape[0] > 300 and len({tuple(p) for p in pixels.reshape(-1, pixels.shape[-1])[::7]}) > 20


def test_a_note_reaches_a_run_that_was_already_fresh(artifacts):
    root, _ = artifacts
    done = train(root, "--note", "the full baseline")
    assert "fresh" in done.stdout
    full = next(row for row in collect(root, TASK) if row["quick"] == "full")
    assert full["note"] == "the full baseline"
    assert json.loads((Path(full["dir"]) / "run.json").read_text())["note"] == "the full baseline"


def test_bad_format_is_one_line(artifacts):
    root, _ = artifacts
    done = asrpipe("runs", "--task", TASK, "--format", "xlsx", artifacts=root, check=False)
    assert done.returncode == 2 and "--format xlsx: expected table, md or csv" in done.stderr
