"""`make demo` end to end on the embedded demo-hw3p2 competition, then the cached and partial re-runs a user makes.

Slow (it trains the demo model, a few minutes on 2 cores); CI runs it.
"""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.submission import read_ledger
from pipeline.tasks.profiles import PROFILES

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def blank_only_score() -> float:
    """What an untrained model that outputs nothing scores: the mean reference length."""
    with open(PROFILES["demo-hw3p2"].embedded_solution, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return sum(len(row["label"]) for row in rows) / len(rows)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    return {**os.environ, "ASRPIPE_ARTIFACTS": str(tmp / "artifacts"), "ASRPIPE_SUBMISSIONS": str(tmp / "submissions"),
            "WANDB_MODE": "offline", "WANDB_SILENT": "true", "COLUMNS": "200"}


def sh(args: list[str], env: dict, timeout: int = 1800) -> str:
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def asrpipe(*args: str, env: dict) -> str:
    return sh([str(Path(sys.executable).parent / "asrpipe"), *args], env)


def stage_states(output: str) -> dict[str, str]:
    return {m.group(2): m.group(1) for m in re.finditer(r"^(fresh|run|resume|done)\s+(\w+)", output, re.M)
            if m.group(1) != "done"}


def make(*targets: str, env: dict) -> str:
    """The repo's Makefile, pointed at the environment running these tests (no second venv)."""
    return sh(["make", *targets, f"VENV={Path(sys.prefix)}"], env)


@pytest.fixture(scope="module")
def demo(env):
    return make("demo", env=env)


def test_make_demo_learns_and_submits(demo, env):
    assert stage_states(demo) == {s: "run" for s in ("download", "normalize", "train", "select", "decode", "csv", "submit")}
    rows = read_ledger(Path(env["ASRPIPE_SUBMISSIONS"]))
    assert len(rows) == 1 and rows[0]["target"] == "local"
    score = float(rows[0]["private_score"])
    assert score < 0.5 * blank_only_score(), f"test Levenshtein {score} vs blank-only {blank_only_score():.1f}"


def test_second_make_demo_is_all_fresh(demo, env):
    again = make("demo", env=env)
    assert set(stage_states(again).values()) == {"fresh"}
    assert len(read_ledger(Path(env["ASRPIPE_SUBMISSIONS"]))) == 1


def test_decode_with_another_beam_keeps_training_fresh(demo, env):
    out = asrpipe("decode", "--task", "demo-hw3p2", "--beam", "5", env=env)
    states = stage_states(out)
    assert states["train"] == "fresh" and states["select"] == "fresh" and states["decode"] == "run"
    decode_dirs = sorted(p.name.split("-")[0] for p in
                         (Path(env["ASRPIPE_ARTIFACTS"]) / "demo-hw3p2" / "decode").iterdir() if p.is_dir())
    assert decode_dirs == ["beam20", "beam5"]


def test_ranges_force_and_status(demo, env):
    ranged = stage_states(asrpipe("run", "--task", "demo-hw3p2", "--from", "select", "--to", "csv", env=env))
    assert ranged == {"select": "fresh", "decode": "fresh", "csv": "fresh"}
    forced = stage_states(asrpipe("run", "--task", "demo-hw3p2", "--force", "--from", "decode", env=env))
    assert forced == {"decode": "run", "csv": "run", "submit": "run"}
    status = asrpipe("status", "--task", "demo-hw3p2", env=env)
    assert status.count("fresh") >= 7 and "stale" not in status
    make_decode = stage_states(make("decode", "TASK=demo-hw3p2", "BEAM=20", env=env))
    assert make_decode["decode"] == "fresh"
