"""GPU check: one training epoch and a decode of each demo competition on CUDA, with the placement asserted.

    .venv/bin/python tools/gpu_check.py                 # all three demos (about 2 minutes on one GPU)
    .venv/bin/python tools/gpu_check.py demo-hw3p2      # one

For each demo: train one epoch (`--set train.epochs=1`) into a scratch artifacts dir, select, decode with
`--device cuda`; assert that the loop trained on CUDA (metrics.json: device cuda, AMP dtype), that the decode stage
ran on CUDA (its manifest), and that the selected model loads onto the GPU and runs a batch there; print the epoch
time and decode time. With no CUDA it says so and exits 0: CI runs on CPU machines.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

DEMOS = ("demo-hw1p2", "demo-hw3p2", "demo-hw4p2")


def asrpipe(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cli.main", *args], check=True)


def manifest(stage_dir: Path) -> dict:
    [done] = [p for p in stage_dir.iterdir() if (p / ".done").exists()]
    return {**json.loads((done / "manifest.json").read_text()), "dir": str(done)}


def check(task: str, root: Path) -> dict:
    common = ["--task", task, "--artifacts", str(root), "--submissions", str(root / "submissions"), "--wandb", "off"]
    asrpipe("run", *common, "--to", "select", "--set", "train.epochs=1")
    start = time.time()
    asrpipe("run", *common, "--from", "decode", "--to", "decode", "--set", "train.epochs=1", "--device", "cuda")
    decode_wall = time.time() - start
    train, select, decode = (manifest(root / task / stage) for stage in ("train", "select", "decode"))
    metrics = train["metrics"]
    assert metrics["device"] == "cuda", f"{task}: trained on {metrics['device']}"
    assert decode["metrics"].get("device", "").startswith("cuda"), f"{task}: decoded on {decode['metrics'].get('device')}"

    from pipeline.models.load import load_model

    model = load_model(Path(select["dir"]) / "model.pt", device="cuda")
    assert all(p.is_cuda for p in model.parameters()), f"{task}: model.pt did not load onto the GPU"
    history = json.loads((Path(train["dir"]) / "history.json").read_text())
    return {"task": task, "amp": metrics.get("amp"), "epoch_s": history[0]["seconds"],
            "decode_stage_s": decode.get("seconds"), "decode_wall_s": round(decode_wall, 1),
            "gpu": torch.cuda.get_device_name(0)}


def main(argv: list[str]) -> int:
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing to check")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        for task in argv or DEMOS:
            print(json.dumps(check(task, Path(scratch))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
