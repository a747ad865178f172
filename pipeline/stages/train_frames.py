"""train (hw1p2, frames): fit the MLP on context windows of the normalized train store, dev accuracy every epoch.

Planning fills the model from the profile (feature dim, classes, parameter limit) and data.context, fits the width
to the limit when model.width is unset, and refuses a model over the limit — before anything runs. Resumable from
`checkpoints/last.pt`. Outputs: `checkpoints/` (last + top-k by dev accuracy, index.json), `history.json`,
`normalization.json`, the W&B run dir (offline unless a key is configured).
"""
from __future__ import annotations

from pipeline.engine import Artifact, Stage, StageRun, write_json_atomic
from pipeline.tasks.hw1p2_recipe import resolve_model
from pipeline.tasks.profiles import Profile


def params(profile: Profile, recipe: dict) -> dict:
    model = resolve_model(recipe["model"], feature_dim=profile.feature_dim, num_classes=len(profile.symbols),
                          context=recipe["data"]["context"], param_limit=profile.param_limit,
                          competition=profile.name)
    return {"model": model, "data": recipe["data"], "train": recipe["train"]}


def normalization_record(normalize: Artifact) -> dict:
    """Which normalization the model expects (as train_ctc records it; not imported, so that editing the CTC stage
    does not make hw1p2 training stale)."""
    manifest = normalize.manifest
    return {"normalize_key": normalize.key, "method": manifest["params"]["method"],
            "global_mvn_sha256": manifest["metrics"].get("global_mvn_sha256"),
            "global_mvn": str(normalize.dir / "global_mvn.npz") if manifest["params"]["method"] == "global" else None}


def label(params: dict) -> str:
    m, t = params["model"], params["train"]
    return f"{m['archetype']}{m['num_layers']}x{m['width']}-c{m['context']}-e{t['epochs']}"


def run(run: StageRun) -> dict:
    from pipeline.data.store import FeatureStore
    from pipeline.tasks.hw1p2_recipe import FrameDataConfig, FrameTrainConfig, MLPConfig
    from pipeline.training.frame_trainer import train_frames

    normalized = run.inputs["normalize"].dir
    write_json_atomic(run.out / "normalization.json", normalization_record(run.inputs["normalize"]))
    run_config = {"competition": run.profile.name, "params": run.params, "keys": run.keys}
    return train_frames(MLPConfig(**run.params["model"]), FrameDataConfig(**run.params["data"]),
                        FrameTrainConfig(**run.params["train"]), FeatureStore.open(normalized / "train"),
                        FeatureStore.open(normalized / "dev"), run.out,
                        tracking=run.options.get("wandb") or "auto", run_name=f"{run.profile.name}-{run.out.name}",
                        run_config=run_config, progress=bool(run.options.get("progress", True)))


STAGE = Stage(name="train", upstream=("normalize",),
              code=("pipeline.stages.train_frames", "pipeline.models.mlp",
                    "pipeline.tasks.hw1p2_recipe", "pipeline.tasks.hw3p2_recipe", "pipeline.training.frame_trainer",
                    "pipeline.training.frame_schedule", "pipeline.training.checkpoints",
                    "pipeline.training.specaugment", "pipeline.training.tracking", "pipeline.data.frames",
                    "pipeline.data.store"),
              params=params, label=label, run=run, resumable=True)
