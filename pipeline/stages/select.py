"""select: one model file from the training run — the best checkpoint, or the average of the top-N or the
last-N checkpoints (floating tensors averaged, integer buffers such as BatchNorm counters by integer division).
Output: `model.pt` (loadable by the task's load_model) and `sources.json` naming the checkpoints used."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.engine import EngineError, Stage, StageRun
from pipeline.files import torch_save_atomic, write_json_atomic
from pipeline.tasks.profiles import Profile


def params(profile: Profile, recipe: dict) -> dict:
    select = recipe["select"]
    return {"method": select["method"], "n": 1 if select["method"] == "best" else select["n"]}


def label(params: dict) -> str:
    return "best" if params["method"] == "best" else f"{params['method'].replace('average-', 'avg')}{params['n']}"


def average_state_dicts(state_dicts: list[dict]):
    import torch

    averaged = {}
    for name, first in state_dicts[0].items():
        stacked = torch.stack([sd[name] for sd in state_dicts])
        if first.is_floating_point():
            averaged[name] = stacked.mean(dim=0).to(first.dtype)
        else:
            averaged[name] = torch.div(stacked.sum(dim=0), len(state_dicts), rounding_mode="floor").to(first.dtype)
    return averaged


def choose(checkpoints: Path, method: str, n: int) -> list[dict]:
    """The checkpoints `method` averages: the n best (or last), or every one there is when the run evaluated fewer
    than n epochs (a short or --quick run keeps them all); a run set to keep fewer than n is refused."""
    index = json.loads((checkpoints / "index.json").read_text())
    if method == "average-last":
        entries = sorted(index.get("recent", []), key=lambda e: e["epoch"])[-n:]
        pool, kept, setting = "recent", index.get("keep_last", n), "train.keep_last"
    else:
        entries = index["checkpoints"][:n]
        pool, kept, setting = "top-k", index.get("keep_top_k", n), "train.keep_top_k"
    if len(entries) < n and kept < n:
        raise EngineError(f"{checkpoints / 'index.json'}: {len(entries)} {pool} checkpoints kept, {method} needs {n} "
                          f"(raise {setting} and retrain, or lower select.n)")
    if not entries:
        raise EngineError(f"{checkpoints / 'index.json'}: no checkpoint kept (the run evaluated no epoch)")
    return entries


def selected_model(train_dir: Path, method: str, n: int) -> tuple[dict, list[dict]]:
    """The model file select writes for a train run folder (also used for other runs in a decode ensemble)."""
    from pipeline.training.checkpoints import load_checkpoint

    checkpoints = train_dir / "checkpoints"
    entries = choose(checkpoints, method, n)
    loaded = [load_checkpoint(checkpoints / e["file"]) for e in entries]
    model = dict(loaded[0])
    model["state_dict"] = average_state_dicts([c["state_dict"] for c in loaded])
    model["selected_from"] = [e["file"] for e in entries]
    record = train_dir / "normalization.json"
    model["normalization"] = json.loads(record.read_text()) if record.exists() else None
    return model, entries


def run(run: StageRun) -> dict:
    checkpoints = run.inputs["train"].dir / "checkpoints"
    model, entries = selected_model(run.inputs["train"].dir, run.params["method"], run.params["n"])
    torch_save_atomic(model, run.out / "model.pt")
    write_json_atomic(run.out / "sources.json", entries)
    short = (f" ({len(entries)} of {run.params['n']}: the run evaluated only {len(entries)} epoch(s))"
             if len(entries) < run.params["n"] else "")
    run.log(f"{run.params['method']}: {', '.join(e['file'] for e in entries)}{short}")
    metric = json.loads((checkpoints / "index.json").read_text()).get("metric", "dev_lev")
    return {"checkpoints": len(entries), "epochs": [e["epoch"] for e in entries],
            f"{metric}_of_sources": [e.get(metric) for e in entries]}


STAGE = Stage(name="select", upstream=("train",), params=params, label=label, run=run)
