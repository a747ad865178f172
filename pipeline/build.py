"""A Pipeline for a task, a recipe and `--set` overrides: what every command that runs stages starts from (the CLI,
a sweep's trials). Torch-free; the imports are inside so that `asrpipe --help` stays fast."""
from __future__ import annotations

from pathlib import Path


def build_pipeline(task: str, config: str | None, sets: list[str] | tuple[str, ...] | None, artifacts: Path,
                   submissions: Path, data: Path | str | None = None, strict_runs: bool = False, **options):
    """`strict_runs`: a `decode.ensemble_runs` reference that names no complete run is an error now (the commands
    that decode); otherwise it stays as written and only the decode stage refuses it, so train/status still work."""
    from pipeline.config import load_recipe
    from pipeline.engine import Pipeline
    from pipeline.stages.download import with_local_data
    from pipeline.tasks import stages_for
    from pipeline.tasks.profiles import resolve_profile

    profile = with_local_data(resolve_profile(task), data, artifacts)  # --data, or the one remembered earlier
    config_name = config or profile.default_config
    recipe = load_recipe(profile.family, config_name, tuple(sets or ()))
    refs = recipe.get("decode", {}).get("ensemble_runs")
    if refs:
        recipe["decode"]["ensemble_runs"] = _resolve_runs(refs, artifacts, profile.name, strict_runs)
    options = {**options, "config": config_name, "overrides": list(sets or ())}
    return without_own_run(Pipeline(profile, recipe, stages_for(profile.family), artifacts_root=artifacts,
                                    submissions_root=submissions, options=options, config_name=config_name,
                                    overrides=tuple(sets or ())))


def without_own_run(pipeline):
    """The pipeline with its own train run left out of `decode.ensemble_runs` (it is always a member: naming it
    must give the same decode key as not naming it)."""
    from pipeline.engine import Pipeline

    refs = pipeline.recipe.get("decode", {}).get("ensemble_runs") or []
    own = pipeline.plan["train"].key if "train" in pipeline.plan else None
    if own not in refs:
        return pipeline
    recipe = {**pipeline.recipe, "decode": {**pipeline.recipe["decode"],
                                            "ensemble_runs": [key for key in refs if key != own]}}
    return Pipeline(pipeline.profile, recipe, pipeline.stages, artifacts_root=pipeline.artifacts_root,
                    submissions_root=pipeline.submissions_root, options=pipeline.options,
                    config_name=pipeline.config_name, overrides=pipeline.overrides)


def _resolve_runs(refs: list[str], artifacts: Path, competition: str, strict: bool = True) -> list[str]:
    """Run references (key prefixes, folder names) as full keys of complete train runs, so the decode key names
    exactly the models it averages; unresolvable ones raise (strict) or stay as written."""
    from pipeline.config import ConfigError
    from pipeline.runs import resolve

    keys = []
    for ref in refs:
        try:
            keys += resolve(artifacts, competition, [ref])
        except ValueError as exc:
            if strict:
                raise ConfigError(str(exc)) from None
            keys.append(str(ref))
    return sorted(set(keys))
