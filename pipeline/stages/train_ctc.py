"""train (hw3p2, CTC): fit the CTC model on the normalized train store, evaluating on dev every epoch.

Resumable: an interrupted run continues from `checkpoints/last.pt` in the same directory. `--nproc N` trains
with N DDP processes under torchrun (gloo on CPU, nccl on GPU). Outputs: `checkpoints/` (last + top-k by dev
Levenshtein, index.json), `history.json`, and the W&B run dir (offline unless a key is configured).
"""
from __future__ import annotations

from pipeline.engine import Artifact, Stage, StageRun, write_json_atomic
from pipeline.tasks.profiles import Profile


def params(profile: Profile, recipe: dict) -> dict:
    model = {**recipe["model"], "input_dim": profile.feature_dim, "num_classes": len(profile.symbols)}
    return {"model": model, "train": recipe["train"]}


def label(params: dict) -> str:
    m, t = params["model"], params["train"]
    return (f"{m['embed']}{m['embed_channels']}x{m['embed_layers']}-ds{m['downsample']}"
            f"-lstm{m['lstm_layers']}x{m['lstm_hidden']}-e{t['epochs']}")


def normalization_record(normalize: Artifact) -> dict:
    """Which normalization the model expects; select copies it into model.pt so the model file says it."""
    manifest = normalize.manifest
    return {"normalize_key": normalize.key, "method": manifest["params"]["method"],
            "global_mvn_sha256": manifest["metrics"].get("global_mvn_sha256"),
            "global_mvn": str(normalize.dir / "global_mvn.npz") if manifest["params"]["method"] == "global" else None}


def run(run: StageRun) -> dict:
    from pipeline.data.store import FeatureStore
    from pipeline.models.ctc_rnn import CTCRNNConfig
    from pipeline.training.ctc_trainer import CTCTrainConfig, train_ctc

    normalized = run.inputs["normalize"].dir
    write_json_atomic(run.out / "normalization.json", normalization_record(run.inputs["normalize"]))
    train_store = FeatureStore.open(normalized / "train")
    model_cfg = {**run.params["model"], "input_dim": train_store.dim}  # the dim normalize detected in the data
    if train_store.dim != run.params["model"]["input_dim"]:
        run.log(f"features are {train_store.dim}-d in the data ({run.profile.name} declares "
                f"{run.params['model']['input_dim']}): the model takes {train_store.dim}")
    run_config = {"competition": run.profile.name, "params": run.params, "keys": run.keys}
    nproc = int(run.options.get("nproc") or 1)
    tracking = run.options.get("wandb") or "auto"
    run_name = f"{run.profile.name}-{run.out.name}"
    if nproc > 1:
        from pipeline.training.ddp_worker import launch_ddp

        job = {"model_cfg": model_cfg, "train_cfg": run.params["train"],
               "train_store": str(normalized / "train"), "dev_store": str(normalized / "dev"),
               "out_dir": str(run.out), "tracking": tracking, "run_name": run_name, "run_config": run_config}
        return launch_ddp(job, nproc)
    return train_ctc(CTCRNNConfig(**model_cfg), CTCTrainConfig(**run.params["train"]),
                     train_store, FeatureStore.open(normalized / "dev"), run.out,
                     tracking=tracking, run_name=run_name, run_config=run_config,
                     progress=bool(run.options.get("progress", True)))


STAGE = Stage(name="train", upstream=("normalize",),
              code=("pipeline.stages.train_ctc", "pipeline.models.ctc_rnn", "pipeline.tasks.hw3p2_recipe",
                    "pipeline.training.ctc_trainer", "pipeline.training.batching", "pipeline.training.checkpoints",
                    "pipeline.training.schedules", "pipeline.training.specaugment", "pipeline.training.tracking",
                    "pipeline.training.ddp_worker", "pipeline.data.store"),
              params=params, label=label, run=run, resumable=True)
