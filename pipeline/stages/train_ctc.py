"""train (hw3p2, CTC): fit the CTC model on the normalized train store, evaluating on dev every epoch.

Resumable: an interrupted run continues from `checkpoints/last.pt` in the same directory. `--nproc N` trains
with N DDP processes under torchrun (gloo on CPU, nccl on GPU). Outputs: `checkpoints/` (last + top-k by dev
Levenshtein, index.json), `history.json`, `metrics.json`, and the W&B run dir (offline unless a key is configured).
"""
from __future__ import annotations

from pipeline.engine import Stage, StageRun
from pipeline.tasks.profiles import Profile
from pipeline.tasks.train_recipe import run_label


def params(profile: Profile, recipe: dict) -> dict:
    """The model's input width and classes come from the profile (the recipe may not set them)."""
    model = {**recipe["model"], "input_dim": profile.feature_dim, "num_classes": len(profile.symbols)}
    return {"model": model, "train": recipe["train"]}


def label(params: dict) -> str:
    m, t = params["model"], params["train"]
    if m["arch"] == "dilated_conv":
        shape = (f"dil{m['max_dilation']}x{m['num_stacks']}-c{m['channels']}{'-bn' if m['batchnorm'] else ''}"
                 f"-ss{m['subsample']}")
    else:
        shape = (f"{m['embed']}{m['embed_channels']}x{m['embed_layers']}-ds{m['downsample']}"
                 f"-lstm{m['lstm_layers']}x{m['lstm_hidden']}")
    return f"{shape}-e{t['epochs']}{run_label(t)}"


def run(run: StageRun) -> dict:
    from pipeline.training.launch import train_stage

    return train_stage(run, "pipeline.training.ctc:make_task")


STAGE = Stage(name="train", upstream=("normalize",), params=params, label=label, run=run, resumable=True)
