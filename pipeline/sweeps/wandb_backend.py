"""`asrpipe sweep run --backend wandb`: the same W&B sweep YAML as a real W&B sweep, run by `wandb agent`.

W&B's controller lives on its servers: this backend needs a W&B key and network (the default Optuna backend runs
the same file offline). The agent starts one asrpipe trial per run with the sweep's values as options
(`${args_no_equals}`: `--train.lr 0.001 --model.dropout 0.25`), which `asrpipe sweep trial` turns into --set
overrides; the trial trains through the pipeline (cached by content) and logs online, so W&B sees the metric.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.sweeps.study import SweepError, SweepJob


def logged_name(metric: str) -> str:
    """The training loop logs dev_lev as dev/lev (pipeline.training.loop.wandb_row)."""
    split, _, name = metric.partition("_")
    return f"{split}/{name}" if split in ("train", "dev") and name else metric


def agent_command(job: SweepJob) -> list[str]:
    """The sweep's `command:`: W&B's macros, then our trial command with absolute paths."""
    command = ["${env}", sys.executable, "-m", "cli.main", "sweep", "trial", "--task", job.task, "--name", job.name,
               "--config", job.config]
    for assignment in job.sets:
        command += ["--set", assignment]
    command += ["--artifacts", str(Path(job.artifacts).resolve()), "--submissions",
                str(Path(job.submissions).resolve()), "${args_no_equals}"]
    return command


def sweep_config(job: SweepJob) -> dict:
    """The user's W&B YAML as W&B gets it: the metric under the name training logs, our command."""
    raw = yaml.safe_load(Path(job.spec).read_text())
    if "stages" in raw:
        raise SweepError(f"{job.spec}: a staged search runs on the Optuna backend only (drop --backend wandb)")
    goal = "minimize" if job.direction == "min" else "maximize"
    return {**raw, "metric": {**(raw.get("metric") or {}), "name": logged_name(job.metric), "goal": goal},
            "command": agent_command(job)}


def agent_sets(args: list[str]) -> list[str]:
    """`--train.lr 0.001 --model.dropout 0.25` (or `--train.lr=0.001`) → ["train.lr=0.001", "model.dropout=0.25"]."""
    sets, i = [], 0
    while i < len(args):
        flag = args[i]
        if not flag.startswith("--"):
            raise ValueError(f"sweep trial: expected --key value pairs from the agent, got {flag!r}")
        if "=" in flag:
            sets.append(flag[2:])
            i += 1
            continue
        if i + 1 >= len(args):
            raise ValueError(f"sweep trial: {flag} has no value")
        sets.append(f"{flag[2:]}={args[i + 1]}")
        i += 2
    return sets


def run_agent(job: SweepJob, count: int | None) -> None:
    from pipeline.training.tracking import wandb_key_configured

    if job.wandb in ("off", "offline") or not wandb_key_configured():
        raise SweepError("--backend wandb needs W&B online (an API key and network) and none is configured here; "
                         "the default --backend optuna runs the same spec offline")
    import wandb

    project = yaml.safe_load(Path(job.spec).read_text()).get("project") or f"asrpipe-{job.competition}"
    try:
        sweep_id = wandb.sweep(sweep=sweep_config(job), project=project)
    except Exception as exc:  # noqa: BLE001 - network, auth: one line
        raise SweepError(f"W&B refused the sweep ({exc.__class__.__name__}: {str(exc).splitlines()[0][:160]}); "
                         f"--backend optuna runs it offline") from None
    agent = shutil.which("wandb") or "wandb"
    cmd = [agent, "agent", *(["--count", str(count)] if count else []), f"{project}/{sweep_id}"]
    print(f"W&B sweep {sweep_id} in project {project}: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True)
