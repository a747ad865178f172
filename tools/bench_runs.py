"""How long `asrpipe runs` takes to list N train runs (default 300), against reading the same JSON files alone.

    python tools/bench_runs.py [N]

Makes N run folders of 50 epochs each in a temp dir (run.json, history.json, manifest.json, .done, as the train
stage writes them), then times collect + table + render (md) in this process, and prints the ratio to a baseline
that only json-loads the same files: the table's own overhead, on a machine too noisy for absolute timings alone.
"""
from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.runs import collect, render, table  # noqa: E402


def make_runs(root: Path, n: int) -> None:
    rng = random.Random(0)
    for i in range(n):
        key = f"{rng.getrandbits(64):016x}"
        run_dir = root / "demo-hw3p2" / "train" / f"dil16x2-c128-bn-ss4-e50-{key[:8]}"
        run_dir.mkdir(parents=True)
        params = {"model": {"arch": "dilated_conv"}, "train": {"epochs": 50, "lr": rng.random()}}
        history = [{"epoch": e, "train_loss": 1.0 / e, "dev_loss": 1.0, "dev_lev": 20.0 / e + rng.random(),
                    "lr": 1e-3, "seconds": 4.0} for e in range(1, 51)]
        (run_dir / "run.json").write_text(json.dumps({"config": "seed003-demo", "overrides": [f"train.lr={i}"],
                                                      "params": params, "metric": "dev_lev", "direction": "min",
                                                      "arch": "dilated_conv", "params_count": 599081}))
        (run_dir / "history.json").write_text(json.dumps(history))
        (run_dir / "manifest.json").write_text(json.dumps({"key": key, "params": params,
                                                           "metrics": {"stop_reason": "completed"}}))
        (run_dir / ".done").write_text(json.dumps({"key": key, "run": "x"}))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_runs(root, n)
        files = sorted((root / "demo-hw3p2" / "train").glob("*/*.json"))
        t0 = time.perf_counter()
        for path in files:
            json.loads(path.read_text())
        baseline = time.perf_counter() - t0
        t0 = time.perf_counter()
        frame = table(collect(root, "demo-hw3p2"))
        text = render(frame, "md")
        listed = time.perf_counter() - t0
    print(f"{n} runs: table {listed * 1000:.0f} ms, json reading alone {baseline * 1000:.0f} ms, "
          f"ratio {listed / baseline:.1f}; {len(text.splitlines()) - 2} rows rendered")


if __name__ == "__main__":
    main()
