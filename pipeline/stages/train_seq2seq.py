"""train (hw4p2, attention): fit LAS or the Transformer (recipe `model.family`) on the normalized train store,
evaluating greedy dev distance every epoch.

Resumable: an interrupted run continues from `checkpoints/last.pt` in the same directory. Outputs: `checkpoints/`
(last + top-k by dev distance, index.json), `attention/` (PNG maps of a few dev utterances per evaluated epoch),
`history.json`, `metrics.json`, and the W&B run dir (offline unless a key is configured).
"""
from __future__ import annotations

from pipeline.engine import Stage, StageRun, write_json_atomic
from pipeline.stages.train_ctc import normalization_record
from pipeline.tasks.hw4p2_recipe import output_symbols, special_tokens
from pipeline.tasks.profiles import Profile


def params(profile: Profile, recipe: dict) -> dict:
    """The model reads its input width and vocabulary from the profile, never from the recipe."""
    model = {**recipe["model"], "input_dim": profile.feature_dim, **special_tokens(profile.symbols),
             "output_tokens": output_symbols(profile.symbols)}
    return {"model": model, "train": recipe["train"], "metric": profile.metric}


def label(params: dict) -> str:
    m, t = params["model"], params["train"]
    if m["family"] == "las":
        shape = f"las{m['listener_hidden']}-p{m['pblstm_layers']}-h{m['attention_heads']}-sp{m['speller_hidden']}"
    else:
        shape = f"tf{m['d_model']}-e{m['encoder_layers']}d{m['decoder_layers']}-ctc{t['ctc_weight']:g}"
    return f"{shape}-e{t['epochs']}"


def run(run: StageRun) -> dict:
    from pipeline.data.store import FeatureStore
    from pipeline.tasks.hw4p2_recipe import FAMILIES, Seq2SeqTrainConfig
    from pipeline.training.seq2seq_trainer import train_seq2seq

    normalized = run.inputs["normalize"].dir
    write_json_atomic(run.out / "normalization.json", normalization_record(run.inputs["normalize"]))
    if int(run.options.get("nproc") or 1) > 1:
        run.log("hw4p2 trains in one process (--nproc is ignored)")
    model_cfg = FAMILIES[run.params["model"]["family"]](**run.params["model"])
    return train_seq2seq(model_cfg, Seq2SeqTrainConfig(**run.params["train"]),
                         FeatureStore.open(normalized / "train"), FeatureStore.open(normalized / "dev"), run.out,
                         symbols=list(run.profile.symbols), metric=run.params["metric"],
                         tracking=run.options.get("wandb") or "auto", run_name=f"{run.profile.name}-{run.out.name}",
                         run_config={"competition": run.profile.name, "params": run.params, "keys": run.keys},
                         progress=bool(run.options.get("progress", True)))


STAGE = Stage(name="train", upstream=("normalize",),
              code=("pipeline.stages.train_seq2seq", "pipeline.stages.train_ctc", "pipeline.tasks.hw4p2_recipe",
                    "pipeline.tasks.hw3p2_recipe", "pipeline.models.las", "pipeline.models.transformer",
                    "pipeline.training.seq2seq_trainer", "pipeline.training.length_batching",
                    "pipeline.training.teacher_forcing", "pipeline.training.attention_plots",
                    "pipeline.decoding.attention_search", "pipeline.decoding.metrics",
                    "pipeline.training.checkpoints", "pipeline.training.ctc_trainer", "pipeline.training.schedules",
                    "pipeline.training.specaugment", "pipeline.training.tracking", "pipeline.data.store"),
              params=params, label=label, run=run, resumable=True)
