"""`asrpipe runs`: the experiment table every write-up keeps by hand (seed 004's: model, epochs, last/best dev metric,
best epoch, notes), made from the train run folders on disk, with the held-out figure of each run's latest decode
(speakers no run trained on, where the profile has such a set). Reads small JSON files only (run.json, history.json,
metrics.json, manifest.json), never checkpoints: hundreds of runs list in well under a second.

    rows = collect(Path("artifacts"), "demo-hw3p2")     # one dict per train run folder, complete or not
    frame = table(rows, config="demo", key=None)        # pandas DataFrame, best first in the metric's direction
    plot_curves(rows, Path("curves.png"))               # dev metric per epoch, one line per run

A run's state: complete | early_stopping | max_minutes | pruned (a sweep stopped it) | stopped (another callback)
| paused | running (a process holds its lock) | incomplete (killed, or never got past its first epoch).
"""
from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pandas as pd

from pipeline.engine import DONE, MANIFEST

COLUMNS = ["key", "config", "overrides", "model", "params", "epochs", "best", "best_epoch", "last", "heldout",
           "minutes", "quick", "state", "note", "dir"]
HELDOUT_FIGURES = ("heldout_beam", "heldout_acc")  # what a decode manifest reports on the held-out set


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect(artifacts_root: Path, competition: str) -> list[dict]:
    """One row per folder under artifacts/<competition>/train/ that holds a run (a run record or a history)."""
    folder = Path(artifacts_root) / competition / "train"
    heldout = heldout_by_run(Path(artifacts_root) / competition)
    rows = []
    for run_dir in sorted(p for p in folder.glob("*") if p.is_dir()):
        row = read_run(run_dir)
        if row is not None:
            rows.append({**row, "heldout": heldout.get(row["full_key"])})
    return rows


def heldout_by_run(competition_dir: Path) -> dict[str, float]:
    """train key → the held-out figure of its most recent complete decode (through select where decode reads the
    train run only through it)."""
    manifests = lambda stage: [m for m in (_json(d / MANIFEST) for d in (competition_dir / stage).glob("*")  # noqa: E731
                                           if (d / DONE).exists()) if m]
    train_of_select = {m["key"]: m["upstream"]["train"]["key"] for m in manifests("select")}
    latest: dict[str, tuple[str, float]] = {}
    for m in manifests("decode"):
        figure = next((m["metrics"][k] for k in HELDOUT_FIGURES if k in m.get("metrics", {})), None)
        upstream = m.get("upstream", {})
        train = upstream.get("train", {}).get("key") or train_of_select.get(upstream.get("select", {}).get("key"))
        if figure is not None and train and (train not in latest or m.get("started", "") > latest[train][0]):
            latest[train] = (m.get("started", ""), figure)
    return {train: figure for train, (_, figure) in latest.items()}


def read_run(run_dir: Path) -> dict | None:
    record = _json(run_dir / "run.json") or {}
    manifest = _json(run_dir / MANIFEST) if (run_dir / DONE).exists() else None
    history = _json(run_dir / "history.json") or []
    metrics = (manifest or {}).get("metrics") or _json(run_dir / "metrics.json") or {}
    if not record and not manifest and not history:
        return None
    params = record.get("params") or (manifest or {}).get("params") or {}
    metric = record.get("metric") or _metric_of(metrics, history)
    direction = record.get("direction") or "min"
    values = [(row["epoch"], row[metric]) for row in history if metric and row.get(metric) is not None]
    best = (min if direction == "min" else max)(values, key=lambda v: v[1], default=(None, None))
    planned = record.get("epochs_planned") or params.get("train", {}).get("epochs")
    name = run_dir.name
    full_key = (manifest or {}).get("key") or (record.get("keys") or {}).get("train") or name.rsplit("-", 1)[-1]
    return {
        "key": full_key[:8], "full_key": full_key,
        "config": record.get("config") or "",
        "overrides": " ".join(record.get("overrides") or ()),
        "model": _model(record, params, name),
        "params": record.get("params_count") or metrics.get("params"),
        "epochs": f"{history[-1]['epoch'] if history else 0}/{planned or '?'}",
        "best": best[1], "best_epoch": best[0],
        "last": values[-1][1] if values else None,
        "minutes": round(sum(row.get("seconds", 0.0) for row in history) / 60, 2),
        "quick": "quick" if record.get("quick") or params.get("train", {}).get("quick") else "full",
        "state": _state(run_dir, manifest, metrics),
        "note": record.get("note") or "",
        "dir": str(run_dir),
        # not shown; for sorting and plotting
        "metric": metric, "direction": direction, "curve": values,
    }


def _metric_of(metrics: dict, history: list[dict]) -> str | None:
    """A run written before run.json named its metric: the best_<metric> of metrics.json, else the history's
    dev column that is not the loss."""
    named = [k.removeprefix("best_") for k in metrics if k.startswith("best_dev_")]
    if named:
        return named[0]
    columns = [k for k in (history[-1] if history else {}) if k.startswith("dev_") and k != "dev_loss"]
    return columns[0] if columns else None


def _model(record: dict, params: dict, folder: str) -> str:
    """arch and the shape part of the folder label (e.g. `ctc_rnn resnet128x2-ds2-lstm2x192`)."""
    arch = record.get("arch") or params.get("model", {}).get("arch") or record.get("family") or ""
    epochs = params.get("train", {}).get("epochs")
    shape = folder.rsplit("-", 1)[0]
    if epochs is not None and f"-e{epochs}" in shape:
        shape = shape[: shape.rindex(f"-e{epochs}")]
    return f"{arch} {shape}".strip()


def _state(run_dir: Path, manifest: dict | None, metrics: dict) -> str:
    if manifest is not None:
        reason = str(metrics.get("stop_reason") or "completed")
        return "complete" if reason == "completed" else reason
    if _locked(run_dir.with_name(run_dir.name + ".lock")):
        return "running"
    reason = str(metrics.get("stop_reason") or "")
    if reason.startswith("callback"):  # stopped from outside; resumes when run again
        return "pruned" if "prune" in reason else "stopped"
    return "paused" if reason == "paused" else "incomplete"


def _locked(lock: Path) -> bool:
    """Another process holds the engine's lock on this run folder (it is training now)."""
    if not lock.exists():
        return False
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def table(rows: list[dict], config: str | None = None, key: str | None = None) -> pd.DataFrame:
    """The rows (filtered by config name and key prefix) as a DataFrame, best first; runs without a dev value last."""
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "metric", "direction", "curve", "full_key"])
    if config:
        frame = frame[frame["config"] == config]
    if key:
        frame = frame[frame["key"].str.startswith(key)]
    direction = frame["direction"].iloc[0] if len(frame) else "min"
    frame = frame.sort_values("best", ascending=direction == "min", na_position="last", kind="stable")
    return frame.reset_index(drop=True)


def render(frame: pd.DataFrame, fmt: str) -> str:
    shown = frame[COLUMNS].rename(columns=_headers(frame))
    if fmt == "csv":
        return shown.to_csv(index=False)
    return shown.to_markdown(index=False, floatfmt=".3f")


def _headers(frame: pd.DataFrame) -> dict:
    metric = next((m for m in frame["metric"] if m), None) if len(frame) else None
    return {"best": f"best {metric}", "last": f"last {metric}", "heldout": "heldout"} if metric else {}


def plot_curves(frame: pd.DataFrame, path: Path) -> Path:
    """Dev metric per epoch of the listed runs, one line each (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for _, row in frame.iterrows():
        if row["curve"]:
            epochs, values = zip(*row["curve"])
            label = f"{row['key']} {row['config']} {row['overrides']}".strip()
            ax.plot(epochs, values, marker="o", markersize=3, label=label[:60])
    metric = next((m for m in frame["metric"] if m), "dev metric") if len(frame) else "dev metric"
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, loc="best")
    from pipeline.files import save_figure

    return save_figure(fig, path, dpi=110)


def resolve(artifacts_root: Path, competition: str, refs: list[str], field: str = "decode.ensemble_runs") -> list[str]:
    """Full keys of the complete train runs `refs` name (see find_run); sorted, without repeats."""
    return sorted({_full_key(find_run(artifacts_root, competition, ref, field)) for ref in refs})


def find_run(artifacts_root: Path, competition: str, ref: str, field: str = "decode.ensemble_runs") -> Path:
    """The complete train run folder named by a key prefix (as `asrpipe runs` shows it), a full key or a folder
    name. Unknown, ambiguous or unfinished runs are one line naming `field` and the runs there are."""
    folder = Path(artifacts_root) / competition / "train"
    runs = {p.name: p for p in sorted(folder.glob("*")) if p.is_dir()}
    ref = str(ref).strip()
    matches = [name for name, run_dir in runs.items()
               if name == ref or (len(ref) >= 4 and _full_key(run_dir).startswith(ref))]
    if not matches:
        known = ", ".join(name.rsplit("-", 1)[-1] for name in runs) or "none"
        raise ValueError(f"{field}: no train run {ref!r} in {folder} (keys there: {known}; see `asrpipe runs`)")
    if len(matches) > 1:
        raise ValueError(f"{field}: {ref!r} names {len(matches)} train runs ({', '.join(matches)}); give more "
                         "of the key")
    run_dir = runs[matches[0]]
    if not (run_dir / DONE).exists():
        state = _state(run_dir, None, _json(run_dir / "metrics.json") or {})
        raise ValueError(f"{field}: train run {run_dir.name} is not complete ({state}); "
                         "finish it (rerun its train command) or leave it out")
    return run_dir


def _full_key(run_dir: Path) -> str:
    manifest = _json(run_dir / MANIFEST) or {}
    return manifest.get("key") or run_dir.name.rsplit("-", 1)[-1]
