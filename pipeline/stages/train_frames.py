"""train (hw1p2, frames): fit the MLP on context windows of the normalized train store, dev accuracy every epoch.

Planning fills the model from the profile (feature dim, classes, parameter limit) and data.context, fits the width
to the limit when model.width is unset, and refuses a model over the limit — before anything runs. Resumable from
`checkpoints/last.pt`; `--nproc N` trains with N DDP processes under torchrun. Outputs: `checkpoints/` (last + top-k
by dev accuracy, index.json), `history.json`, `metrics.json`, `normalization.json`, the W&B run dir.
"""
from __future__ import annotations

from pipeline.engine import Stage, StageRun
from pipeline.tasks.frames_recipe import resolve_model
from pipeline.tasks.profiles import Profile
from pipeline.tasks.train_recipe import run_label


def params(profile: Profile, recipe: dict) -> dict:
    model = resolve_model(recipe["model"], feature_dim=profile.feature_dim, num_classes=len(profile.symbols),
                          context=recipe["data"]["context"], param_limit=profile.param_limit,
                          competition=profile.name)
    return {"model": model, "data": recipe["data"], "train": recipe["train"]}


def label(params: dict) -> str:
    m, t = params["model"], params["train"]
    return f"{m['archetype']}{m['num_layers']}x{m['width']}-c{m['context']}-e{t['epochs']}{run_label(t)}"


def run(run: StageRun) -> dict:
    from pipeline.training.launch import train_stage

    return train_stage(run, "pipeline.training.frames:make_task")


STAGE = Stage(name="train", upstream=("normalize",), params=params, label=label, run=run, resumable=True)
