"""A Pipeline for a task, a recipe and `--set` overrides: what every command that runs stages starts from (the CLI,
a sweep's trials). Torch-free; the imports are inside so that `asrpipe --help` stays fast."""
from __future__ import annotations

from pathlib import Path


def build_pipeline(task: str, config: str | None, sets: list[str] | tuple[str, ...] | None, artifacts: Path,
                   submissions: Path, data: Path | str | None = None, **options):
    from pipeline.config import load_recipe
    from pipeline.engine import Pipeline
    from pipeline.stages.download import with_local_data
    from pipeline.tasks import stages_for
    from pipeline.tasks.profiles import resolve_profile

    profile = with_local_data(resolve_profile(task), data, artifacts)  # --data, or the one remembered earlier
    config_name = config or profile.default_config
    recipe = load_recipe(profile.family, config_name, tuple(sets or ()))
    if recipe.get("decode", {}).get("ensemble_runs"):
        recipe["decode"]["ensemble_runs"] = _resolve_runs(recipe["decode"]["ensemble_runs"], artifacts, profile.name)
    options = {**options, "config": config_name, "overrides": list(sets or ())}
    return Pipeline(profile, recipe, stages_for(profile.family), artifacts_root=artifacts,
                    submissions_root=submissions, options=options, config_name=config_name,
                    overrides=tuple(sets or ()))


def _resolve_runs(refs: list[str], artifacts: Path, competition: str) -> list[str]:
    """Run references (key prefixes, folder names) as full keys of complete train runs, so the decode key names
    exactly the models it averages."""
    from pipeline.config import ConfigError
    from pipeline.runs import resolve

    try:
        return resolve(artifacts, competition, refs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
