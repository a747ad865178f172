"""decode (hw1p2): the class of every dev and test frame, argmax of the model's posteriors.

decode.ensemble = 1 uses the selected model (`select`: best, or a weight average); N > 1 averages the softmax
posteriors of the N best checkpoints by dev accuracy in the train run (a posterior ensemble, different from
select's weight averaging: it also works for checkpoints far apart in training). Each model reads windows with
its own context and padding, as its checkpoint records them. decode.tta_warp = r > 0 adds test-time vocal tract
length perturbation: every model also classifies the features with the mel axis scaled by 1-r and 1+r (the maps of
train.augment.freq_warp) and the three posteriors are averaged; decode.smooth = k > 1 replaces each frame's
posteriors by their mean over the k frames around it within its utterance. Both are for speakers the model has not
heard (measured on the demo's held-out accents, pipeline/configs/hw1p2/RESULTS.md).

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
    chosen = {"ensemble": decode["ensemble"], "batch_size": decode["batch_size"], **ensemble_params(profile, recipe)}
    trained = recipe["train"]["augment"]["freq_warp"]
    if decode["tta_warp"] > trained:
        from pipeline.config import ConfigError

        raise ConfigError(f"decode.tta_warp={decode['tta_warp']:g}: the model must have trained on frequency warps at "
                          f"least that large (train.augment.freq_warp={trained:g}); a model trained without them "
                          f"loses accuracy under test-time warps (hw1p2 RESULTS.md)")
    if decode["tta_warp"]:  # absent when off, so decodes without them keep their keys
        chosen.update(tta_warp=decode["tta_warp"], mel_bands=recipe["train"]["augment"]["mel_bands"])
    if decode["smooth"] > 1:
        chosen["smooth"] = decode["smooth"]
    return chosen


def label(params: dict) -> str:
    runs = f"-runs{len(params['ensemble_runs']) + 1}" if params.get("ensemble_runs") else ""
    tta = f"-tta{params['tta_warp']:g}" if params.get("tta_warp") else ""
    smooth = f"-smooth{params['smooth']}" if params.get("smooth") else ""
    return ("argmax" if params["ensemble"] == 1 else f"argmax-ens{params['ensemble']}") + runs + tta + smooth


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


def tta_warps(normalized: Path, ratio: float, mel_bands: int | None) -> list[np.ndarray | None]:
    """decode.tta_warp's feature maps: None (the features as they are), then the mel axis scaled by 1-r and 1+r
    (`mel_bands`, the decode params' copy of train.augment.mel_bands, is set whenever r is)."""
    from pipeline.data.store import FEATURE_STATS, StoreError
    from pipeline.tasks.train_recipe import AugmentConfig
    from pipeline.training.augment import load_warps

    if not ratio:
        return [None]
    if not (normalized / FEATURE_STATS).exists():
        raise StoreError(f"{normalized / FEATURE_STATS}: missing; decode.tta_warp needs the raw feature statistics "
                         f"the normalize stage records (rerun normalize)")
    maps = load_warps(AugmentConfig(freq_warp=ratio, mel_bands=mel_bands), normalized).numpy()
    return [None, maps[0], maps[-1]]


def posteriors(checkpoint: Path | dict, stores: dict, batch_size: int, device=None,
               warp: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Softmax (frames, classes) float32 per partition, frames in store order (the model on `device`, default
    auto: CUDA when present), of the features mapped by `warp` (F, F) if given. Frames are classified
    independently: batches are runs of consecutive frame windows (no padding), so there is no length ordering to
    undo."""
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
    mapping = None if warp is None else torch.from_numpy(np.ascontiguousarray(warp.T, dtype=np.float32)).to(device)
    result = {}
    with torch.inference_mode(), progress_bar() as bar:
        for partition, store in stores.items():
            windows = FrameWindows(store, model.cfg.context, padding)
            out = np.empty((len(windows), model.cfg.num_classes), np.float32)
            task = bar.add_task(f"posteriors {partition} ({name}{'' if warp is None else ', warped'})",
                                total=len(windows))
            start = 0
            for x, _ in windows.batches(batch_size, shuffle=False, with_labels=False):
                x = torch.from_numpy(x).to(device)
                if mapping is not None:  # each frame of the window mapped; zero padding stays zero
                    x = (x.view(len(x), -1, store.dim) @ mapping).reshape(len(x), -1)
                probs = torch.softmax(model(x).float(), dim=-1)
                out[start : start + len(x)] = probs.cpu().numpy()
                start += len(x)
                bar.advance(task, len(x))
            result[partition] = out
    return result


def averaged_posteriors(members: list[Path | dict], stores: dict, batch_size: int, device=None,
                        dev_truth: np.ndarray | None = None, warps: list[np.ndarray | None] = (None,),
                        ) -> tuple[dict[str, np.ndarray], list[float]]:
    """The mean posteriors per partition over members × feature maps (`warps`, tta_warps), and each member's
    own dev frame accuracy (%, over its maps)."""
    total: dict[str, np.ndarray] = {}
    alone = []
    for member in members:
        own: dict[str, np.ndarray] = {}
        for warp in warps:
            for name, probs in posteriors(member, stores, batch_size, device, warp).items():
                own[name] = own[name] + probs if name in own else probs
        for name, probs in own.items():
            total[name] = total[name] + probs if name in total else probs
        if dev_truth is not None:
            alone.append(round(float((own["dev"].argmax(axis=1) == dev_truth).mean() * 100), 3))
    return {name: probs / (len(members) * len(warps)) for name, probs in total.items()}, alone


def smooth_posteriors(probs: np.ndarray, offsets: np.ndarray, frames: int) -> np.ndarray:
    """Each frame's posteriors replaced by their mean over the `frames` (odd) frames centred on it, within its
    utterance (fewer at the utterance's ends): a phoneme lasts several frames, so one frame's outlier is outvoted."""
    if frames <= 1:
        return probs
    half = frames // 2
    out = np.empty_like(probs)
    for start, end in zip(offsets[:-1], offsets[1:]):
        if end == start:
            continue
        sums = np.concatenate([np.zeros((1, probs.shape[1])), np.cumsum(probs[start:end], axis=0, dtype=np.float64)])
        index = np.arange(end - start)
        low, high = np.maximum(index - half, 0), np.minimum(index + half + 1, end - start)
        out[start:end] = (sums[high] - sums[low]) / (high - low)[:, None]
    return out


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
    warps = tta_warps(normalized, run.params.get("tta_warp", 0.0), run.params.get("mel_bands"))
    probs, members_acc = averaged_posteriors(members, stores, run.params["batch_size"], device, dev_truth, warps)
    probs = {name: smooth_posteriors(p, stores[name].offsets, run.params.get("smooth", 1)) for name, p in probs.items()}
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
            + f", {len(members)} model(s) × {len(warps)} feature map(s) on {device}"
            + f"; confusion → {run.out / 'dev_confusion.png'}")
    return {"dev_acc": dev_acc, "dev_majority_acc": majority_acc, "dev_frames": int(len(dev_truth)), **heldout,
            "test_frames": int(len(test_predicted)), "members": [_member_name(m) for m in members],
            "members_dev_acc": members_acc,
            "per_phoneme_acc": per_phoneme, "device": str(device)}


def _member_name(member: Path | dict) -> str:
    return member.name if isinstance(member, Path) else f"run {member.get('run_key', '?')[:8]}"


STAGE = Stage(name="decode", upstream=("normalize", "select", "train"),
              params=params, label=label, run=run)
