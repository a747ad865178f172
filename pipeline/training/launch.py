"""Start training for a train stage: in this process, or as N DDP processes under torchrun (every family).

    torchrun --standalone --nproc_per_node 2 -m pipeline.training.launch JOB.json

JOB.json: {"factory": "pipeline.training.<kind>:make_task", "task_args": {...}, "out_dir", "tracking", "run_name",
"run_config", "progress"}. Each rank builds the task from the factory and runs the one loop; rank 0 evaluates and
writes checkpoints, history, W&B and out_dir/metrics.json. Torch-free until a job runs.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.errors import AsrpipeError

RUN_RECORD = "run.json"

def make(factory: str, task_args: dict):
    module, _, function = factory.partition(":")
    return getattr(importlib.import_module(module), function)(**task_args)


def run_training(factory: str, task_args: dict, out_dir: Path, *, nproc: int = 1, tracking: str = "auto",
                 run_name: str, run_config: dict, progress: bool = True, on_epoch=None) -> dict:
    """Train the task `factory(**task_args)` builds into out_dir; with nproc > 1 under torchrun."""
    job = {"factory": factory, "task_args": task_args, "out_dir": str(out_dir), "tracking": tracking,
           "run_name": run_name, "run_config": run_config, "progress": progress}
    if nproc <= 1:
        from pipeline.training.loop import train

        return train(make(factory, task_args), out_dir, tracking=tracking, run_name=run_name, run_config=run_config,
                     progress=progress, on_epoch=on_epoch)
    if on_epoch is not None:
        raise AsrpipeError("an epoch callback (a sweep's pruning) runs in this process only: train with --nproc 1")
    return launch_ddp(job, nproc)


def launch_ddp(job: dict, nproc: int) -> dict:
    """Run the job under torchrun with nproc processes on this machine; rank 0's metrics, or CalledProcessError."""
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    job_path = out_dir / "ddp_job.json"
    job_path.write_text(json.dumps(job, indent=1))
    (out_dir / "metrics.json").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "pipeline.training.launch", str(job_path)]
    threads = os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": threads})
    return json.loads((out_dir / "metrics.json").read_text())


def run_job(job_path: str) -> dict:
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from pipeline.training.loop import train

    job = json.loads(Path(job_path).read_text())
    # rank 0 evaluates the dev set while the others wait at a barrier: allow for a long evaluation
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=timedelta(hours=2))
    try:
        return train(make(job["factory"], job["task_args"]), Path(job["out_dir"]), tracking=job["tracking"],
                     run_name=job["run_name"], run_config=job["run_config"], progress=job["progress"])
    finally:
        dist.destroy_process_group()


class StoppedByCallback(AsrpipeError):
    """The epoch callback (a sweep's pruner) stopped the run: the stage is not complete, so no .done is written and
    a later run of the same key, with or without a callback, resumes it instead of taking it for a finished one."""

    def __init__(self, message: str, metrics: dict):
        super().__init__(message)
        self.metrics = metrics


def train_stage(run, factory: str, **task_args) -> dict:
    """A train stage's run(): record the normalization the model expects, then train on the normalize output."""
    from pipeline.files import write_json_atomic

    normalize = run.inputs["normalize"]
    write_json_atomic(run.out / "normalization.json", normalization_record(normalize))
    record_run(run)
    if run.params["train"].get("fit_on") == "train+dev":
        task_args["train_store"] = str(final_fit_store(normalize.dir, run.out))
    metrics = run_training(factory, {"params": run.params, "normalized": str(normalize.dir), **task_args}, run.out,
                           nproc=int(run.options.get("nproc") or 1), tracking=run.options.get("wandb") or "auto",
                           run_name=f"{run.profile.name}-{run.out.name}",
                           run_config={"competition": run.profile.name, "params": run.params, "keys": run.keys,
                                       "group": run.options.get("group")},
                           progress=bool(run.options.get("progress", True)), on_epoch=run.options.get("on_epoch"))
    if str(metrics.get("stop_reason", "")).startswith("callback"):
        raise StoppedByCallback(f"{run.out}: {metrics['stop_reason']} after epoch {metrics['epochs']}; the run "
                                f"stays incomplete and goes on from there when run again", metrics)
    return metrics


FIT_STORE = "train+dev"


def final_fit_store(normalized: Path, out: Path) -> Path:
    """The train and dev stores as one (written once into the train run's folder; a resumed run reuses it)."""
    from pipeline.data.store import FeatureStore, merge_stores

    path = out / FIT_STORE
    if not (path / "meta.json").exists():
        merge_stores([FeatureStore.open(Path(normalized) / name) for name in ("train", "dev")], path)
    return path


def record_run(run) -> None:
    """run.json: how this train run was asked for (`asrpipe runs` reads it, also for a run that never finished);
    the loop adds what it trains (metric, direction, arch). A resumed run keeps its first start time and note."""
    import time

    from pipeline.files import update_json_atomic

    path = run.out / RUN_RECORD
    first = json.loads(path.read_text()) if path.exists() else {}
    update_json_atomic(path, competition=run.profile.name, family=run.profile.family,
                       config=run.options.get("config"), overrides=list(run.options.get("overrides") or ()),
                       note=run.options.get("note") or first.get("note"), quick=run.params["train"].get("quick"),
                       params=run.params, keys=run.keys, command=run.command,
                       started=first.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def normalization_record(normalize) -> dict:
    """Which normalization the model expects; select copies it into model.pt so the model file says it."""
    manifest = normalize.manifest
    method = manifest["params"]["method"]
    return {"normalize_key": normalize.key, "method": method,
            "global_mvn_sha256": manifest["metrics"].get("global_mvn_sha256"),
            "global_mvn": str(normalize.dir / "global_mvn.npz") if method == "global" else None}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: torchrun --standalone --nproc_per_node N -m pipeline.training.launch JOB.json")
    run_job(sys.argv[1])
