"""train (hw4p2, attention): fit LAS or the Transformer (recipe `model.arch`) on the normalized train store,
evaluating greedy dev distance every epoch.

Resumable: an interrupted run continues from `checkpoints/last.pt` in the same directory; `--nproc N` trains with N
DDP processes under torchrun. Outputs: `checkpoints/` (last + top-k by dev distance, index.json), `attention/` (PNG
maps of a few dev utterances per evaluated epoch), `history.json`, `metrics.json`, and the W&B run dir.
"""
from __future__ import annotations

from pipeline.engine import Stage, StageRun
from pipeline.tasks.seq2seq_recipe import output_symbols, special_tokens
from pipeline.tasks.profiles import Profile
from pipeline.tasks.train_recipe import run_label


def params(profile: Profile, recipe: dict) -> dict:
    """The model reads its input width and vocabulary from the profile, never from the recipe."""
    model = {**recipe["model"], "input_dim": profile.feature_dim, **special_tokens(profile.symbols),
             "output_tokens": output_symbols(profile.symbols)}
    return {"model": model, "train": recipe["train"], "metric": profile.metric}


def label(params: dict) -> str:
    m, t = params["model"], params["train"]
    if m["arch"] == "las":
        shape = f"las{m['listener_hidden']}-p{m['pblstm_layers']}-h{m['attention_heads']}-sp{m['speller_hidden']}"
    else:
        shape = f"tf{m['d_model']}-e{m['encoder_layers']}d{m['decoder_layers']}-ctc{t['ctc_weight']:g}"
    return f"{shape}-e{t['epochs']}{run_label(t)}"


def run(run: StageRun) -> dict:
    from pipeline.training.launch import train_stage

    return train_stage(run, "pipeline.training.seq2seq:make_task", symbols=list(run.profile.symbols))


STAGE = Stage(name="train", upstream=("normalize",), params=params, label=label, run=run, resumable=True)
