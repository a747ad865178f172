"""Decode ensembles of train runs: other runs' models, each picked with the recipe's select method, next to the
pipeline's own; their per-frame outputs are averaged (CTC log-probs or hw1p2 posteriors) and decoded once.

    decode.ensemble_runs: [5cbf1175, 9a0e77d2]       # keys as `asrpipe runs` shows them, or folder names
    asrpipe decode --task demo-hw3p2 --ensemble 5cbf1175,9a0e77d2

The references are resolved to full keys of complete runs when the pipeline is built (pipeline/build.py), so the
decode key names exactly the models it averages. Probabilities are averaged (log of the mean), not log-probs:
the average stays a distribution and one confident member cannot veto the others.
"""
from __future__ import annotations

import math


def ensemble_params(profile, recipe: dict) -> dict:
    """The decode params an ensemble adds (none without one, so decode keys stay put): the members' full keys
    (pipeline/build.py resolves them) and the select method that picks each member's model."""
    from pipeline.stages import select

    runs = recipe["decode"]["ensemble_runs"]
    if not runs:
        return {}
    chosen = select.params(profile, recipe)
    return {"ensemble_runs": runs, "select_method": chosen["method"], "select_n": chosen["n"]}


def member_models(run, field: str = "decode.ensemble_runs") -> list[tuple[str, str, object]]:
    """(train key, its select key, a loader of its selected model dict) for each other run in the ensemble,
    refusing runs trained on other features. The select key is the one that run's own pipeline has with this
    recipe's select method, so the log-prob caches are shared; the checkpoints are read only when called."""
    from pipeline.engine import Artifact, EngineError, stage_code, stage_key
    from pipeline.runs import find_run
    from pipeline.stages import select

    if not run.params.get("ensemble_runs"):
        return []
    own = run.keys.get("train")
    normalize = run.inputs["normalize"].key
    select_params = {"method": run.params["select_method"], "n": run.params["select_n"]}
    members = []
    for key in run.params["ensemble_runs"]:
        if key == own:
            continue  # the pipeline's own run is always a member (pipeline/build.py drops it from the list)
        try:  # a full key, or a reference the pipeline could not resolve when it was built (one line saying why)
            folder = find_run(run.artifacts_root, run.profile.name, key, field)
        except ValueError as exc:
            raise EngineError(str(exc)) from None
        trained_on = Artifact("train", key, folder).manifest["upstream"]["normalize"]["key"]
        if trained_on != normalize:
            raise EngineError(f"{field}: run {folder.name} was trained on other features (normalize "
                              f"{trained_on[:8]}, this decode reads {normalize[:8]}); ensemble runs must share "
                              "the normalize stage (normalize.method)")
        select_key = stage_key("select", select_params, {"train": key}, stage_code(select.STAGE))

        def load(folder=folder, key=key) -> dict:
            model, _ = select.selected_model(folder, select_params["method"], select_params["n"])
            return {**model, "run_key": key}

        members.append((key, select_key, load))
    return members


def mean_log_probs(members: list[list], names: list[str], field: str = "decode.ensemble_runs") -> list:
    """Per utterance, log of the mean of the members' probabilities; members must give the same frame counts."""
    import torch

    from pipeline.engine import EngineError

    first = members[0]
    for name, member in zip(names[1:], members[1:]):
        for index, (a, b) in enumerate(zip(first, member)):
            if a.shape != b.shape:
                raise EngineError(f"{field}: run {name[:8]} gives {tuple(b.shape)} (frames, classes) for utterance "
                                  f"{index} where {names[0][:8]} gives {tuple(a.shape)}: a CTC ensemble needs the same "
                                  "frame rate and symbols (model.downsample / model.subsample)")
    return [torch.logsumexp(torch.stack(frames), dim=0) - math.log(len(members)) for frames in zip(*members)]

