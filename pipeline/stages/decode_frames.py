"""decode (hw1p2): the class of every dev and test frame, argmax of the model's posteriors.

decode.ensemble = 1 uses the selected model (`select`: best, or a weight average); N > 1 averages the softmax
posteriors of the N best checkpoints by dev accuracy in the train run (a posterior ensemble, different from
select's weight averaging: it also works for checkpoints far apart in training). Each model reads windows with
its own context and padding, as its checkpoint records them.

Outputs: `test_frames.npy` (int32, one class per test frame, utterances in sorted-id order) and
`test_hypotheses.json` ({"ids", "frames_file", "frames"}) for csv; `dev_results.json` (accuracy, per-phoneme
accuracy, confusion counts), `dev_confusion.npy`, `dev_confusion.png`. The manifest has dev accuracy, the
majority-class baseline and per-phoneme accuracy, and `heldout_acc` on a held-out store (unseen speakers).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.engine import EngineError, Stage, StageRun
from pipeline.files import save_npy_atomic, write_json_atomic
from pipeline.tasks.profiles import Profile


def params(profile: Profile, recipe: dict) -> dict:
    from pipeline.decoding.ensemble import ensemble_params

    decode = recipe["decode"]
    return {"ensemble": decode["ensemble"], "batch_size": decode["batch_size"], **ensemble_params(profile, recipe)}


def label(params: dict) -> str:
    runs = f"-runs{len(params['ensemble_runs']) + 1}" if params.get("ensemble_runs") else ""
    return ("argmax" if params["ensemble"] == 1 else f"argmax-ens{params['ensemble']}") + runs


def ensemble_members(run: StageRun) -> list[Path | dict]:
    """This run's model(s) (decode.ensemble), then the other runs' selected models (decode.ensemble_runs)."""
    from pipeline.decoding.ensemble import member_models

    return _own_members(run) + [load() for _, _, load in member_models(run)]


def _own_members(run: StageRun) -> list[Path]:
    if run.params["ensemble"] == 1:
        return [run.inputs["select"].dir / "model.pt"]
    index_path = run.inputs["train"].dir / "checkpoints" / "index.json"
    entries = json.loads(index_path.read_text())["checkpoints"][: run.params["ensemble"]]
    if len(entries) < run.params["ensemble"]:
        raise EngineError(f"{index_path}: {len(entries)} top-k checkpoints kept, decode.ensemble="
                          f"{run.params['ensemble']} needs that many (raise train.keep_top_k and retrain, or lower "
                          f"decode.ensemble)")
    return [index_path.parent / e["file"] for e in entries]


def posteriors(checkpoint: Path | dict, stores: dict, batch_size: int, device=None) -> dict[str, np.ndarray]:
    """Softmax (frames, classes) float32 per partition, frames in store order (the model on `device`, default
    auto: CUDA when present). Frames are classified independently: batches are runs of consecutive frame windows
    (no padding), so there is no length ordering to undo."""
    import torch

    from pipeline.data.frames import FrameWindows
    from pipeline.device import resolve_device
    from pipeline.progress import progress_bar
    from pipeline.models.load import load_model
    from pipeline.training.checkpoints import load_checkpoint

    saved = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    name = checkpoint.name if isinstance(checkpoint, Path) else "+".join(checkpoint.get("selected_from", ["model"]))
    device = resolve_device(None) if device is None else torch.device(device)
    model = load_model(saved, device)
    padding = (saved.get("data") or {}).get("padding", "utterance")
    result = {}
    with torch.inference_mode(), progress_bar() as bar:
        for partition, store in stores.items():
            windows = FrameWindows(store, model.cfg.context, padding)
            out = np.empty((len(windows), model.cfg.num_classes), np.float32)
            task = bar.add_task(f"posteriors {partition} ({name})", total=len(windows))
            start = 0
            for x, _ in windows.batches(batch_size, shuffle=False, with_labels=False):
                probs = torch.softmax(model(torch.from_numpy(x).to(device)).float(), dim=-1)
                out[start : start + len(x)] = probs.cpu().numpy()
                start += len(x)
                bar.advance(task, len(x))
            result[partition] = out
    return result


def averaged_posteriors(members: list[Path | dict], stores: dict, batch_size: int, device=None,
                        dev_truth: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], list[float]]:
    """The members' mean posteriors per partition, and each member's own dev frame accuracy (%)."""
    total: dict[str, np.ndarray] = {}
    alone = []
    for member in members:
        for name, probs in posteriors(member, stores, batch_size, device).items():
            total[name] = total[name] + probs if name in total else probs
            if name == "dev" and dev_truth is not None:
                alone.append(round(float((probs.argmax(axis=1) == dev_truth).mean() * 100), 3))
    return {name: probs / len(members) for name, probs in total.items()}, alone


def run(run: StageRun) -> dict:
    from pipeline.data.store import FeatureStore, decode_stores
    from pipeline.decoding.frame_report import (accuracy, confusion_matrix, majority_baseline, per_class_accuracy,
                                                plot_confusion)

    from pipeline.device import resolve_device

    device = resolve_device(run.options.get("device"))  # first: a device we cannot use fails before any work
    normalized = run.inputs["normalize"].dir
    stores = decode_stores(normalized)
    members = ensemble_members(run)
    dev_truth = np.asarray(stores["dev"].labels_array)
    probs, members_acc = averaged_posteriors(members, stores, run.params["batch_size"], device, dev_truth)
    symbols = list(run.profile.symbols)
    dev_predicted = probs["dev"].argmax(axis=1)
    test_predicted = probs["test"].argmax(axis=1).astype(np.int32)

    confusion = confusion_matrix(dev_truth, dev_predicted, len(symbols))
    per_phoneme = per_class_accuracy(confusion, symbols)
    majority, majority_acc = majority_baseline(FeatureStore.open(normalized / "train").labels_array, dev_truth,
                                               len(symbols))
    dev_acc = accuracy(confusion)
    save_npy_atomic(run.out / "dev_confusion.npy", confusion)
    plot_confusion(confusion, symbols, run.out / "dev_confusion.png",
                   f"{run.profile.name} dev: {dev_acc:.2f}% frame accuracy ({len(members)} model(s))")
    write_json_atomic(run.out / "dev_results.json", {
        "accuracy": dev_acc, "majority_class": symbols[majority], "majority_accuracy": majority_acc,
        "per_phoneme_accuracy": per_phoneme, "symbols": symbols, "confusion": confusion.tolist()})
    save_npy_atomic(run.out / "test_frames.npy", test_predicted)
    write_json_atomic(run.out / "test_hypotheses.json", {"ids": stores["test"].ids, "frames_file": "test_frames.npy",
                                                         "frames": len(test_predicted)})
    heldout = {}
    if "heldout" in stores:  # unseen speakers: the figure a recipe change is judged on
        truth = np.asarray(stores["heldout"].labels_array)
        heldout = {"heldout_acc": round(float((probs["heldout"].argmax(axis=1) == truth).mean() * 100), 3),
                   "heldout_frames": int(len(truth))}
    run.log(f"dev frame accuracy {dev_acc:.2f}% (majority class {symbols[majority]}: {majority_acc:.2f}%)"
            + (f", held-out speakers {heldout['heldout_acc']:.2f}%" if heldout else "")
            + f", {len(members)} model(s) on {device}; confusion → {run.out / 'dev_confusion.png'}")
    return {"dev_acc": dev_acc, "dev_majority_acc": majority_acc, "dev_frames": int(len(dev_truth)), **heldout,
            "test_frames": int(len(test_predicted)), "members": [_member_name(m) for m in members],
            "members_dev_acc": members_acc,
            "per_phoneme_acc": per_phoneme, "device": str(device)}


def _member_name(member: Path | dict) -> str:
    return member.name if isinstance(member, Path) else f"run {member.get('run_key', '?')[:8]}"


STAGE = Stage(name="decode", upstream=("normalize", "select", "train"),
              params=params, label=label, run=run)
