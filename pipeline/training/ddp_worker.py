"""DDP entry point: one process per rank, started by torchrun.

    torchrun --standalone --nproc_per_node 2 -m pipeline.training.ddp_worker JOB.json

JOB.json: {model_cfg, train_cfg, train_store, dev_store, out_dir, tracking, run_name, run_config}.
Every rank trains on its own shard of each epoch's batches; rank 0 evaluates and writes checkpoints, history,
W&B and out_dir/metrics.json. `launch_ddp(job, nproc)` writes the job file and runs torchrun for you.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist


def run_job(job_path: str) -> dict:
    from pipeline.models.ctc_rnn import CTCRNNConfig
    from pipeline.training.ctc_trainer import CTCTrainConfig, train_ctc

    job = json.loads(Path(job_path).read_text())
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    # rank 0 evaluates the dev set while the others wait at a barrier: allow for a long evaluation
    dist.init_process_group(backend, timeout=timedelta(hours=2))
    try:
        return train_ctc(
            CTCRNNConfig(**job["model_cfg"]), CTCTrainConfig(**job["train_cfg"]), job["train_store"], job["dev_store"],
            Path(job["out_dir"]), tracking=job.get("tracking", "off"), run_name=job.get("run_name", "ddp"),
            run_config=job.get("run_config", {}), progress=job.get("progress", True),
        )
    finally:
        dist.destroy_process_group()


def launch_ddp(job: dict, nproc: int) -> dict:
    """Run the job under torchrun with nproc processes on this machine; rank 0's metrics, or CalledProcessError."""
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    job_path = out_dir / "ddp_job.json"
    plain = {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in job.items()}
    plain.update(out_dir=str(out_dir), train_store=str(getattr(job["train_store"], "path", job["train_store"])),
                 dev_store=str(getattr(job["dev_store"], "path", job["dev_store"])))
    job_path.write_text(json.dumps(plain, indent=1))
    (out_dir / "metrics.json").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "pipeline.training.ddp_worker", str(job_path)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))}
    subprocess.run(cmd, check=True, env=env)
    return json.loads((out_dir / "metrics.json").read_text())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: torchrun --standalone --nproc_per_node N -m pipeline.training.ddp_worker JOB.json")
    run_job(sys.argv[1])
