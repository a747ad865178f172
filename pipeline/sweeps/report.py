"""What a sweep found: its trials as a table, each stage's winner, the best as a recipe YAML, and Optuna's plots.

    rows = trial_rows(job)                 # one dict per trial of every stage
    path = write_best(job)                 # artifacts/<competition>/sweeps/<name>/best.yaml (a --config recipe)
    pngs = write_plots(job)                # optimization history, parameter importances, parallel coordinates
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from pipeline.sweeps.study import SweepError, SweepJob, _spec, base_recipe, describe, storage_for
from pipeline.sweeps.spec import override

COLUMNS = ["stage", "trial", "state", "params", "value", "epochs", "minutes", "dir"]


def studies(job: SweepJob) -> list:
    """The stage studies that exist in the storage, in stage order."""
    import optuna

    storage = storage_for(job)
    names = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    return [(stage, optuna.load_study(study_name=job.study_name(stage), storage=storage))
            for stage in job.stages if job.study_name(stage) in names]


def trial_rows(job: SweepJob) -> pd.DataFrame:
    rows = []
    for stage, study in studies(job):
        for trial in study.get_trials(deepcopy=False):
            attrs = trial.user_attrs
            rows.append({"stage": stage, "trial": trial.number, "state": trial.state.name.lower(),
                         "params": describe(attrs.get("applied", trial.params)), "value": trial.value,
                         "epochs": attrs.get("epochs"), "minutes": attrs.get("minutes"),
                         "dir": attrs.get("train_dir", "")})
    return pd.DataFrame(rows, columns=COLUMNS)


def winners(job: SweepJob) -> list[dict]:
    """Each stage's best complete trial and the fixed values it started from."""
    from optuna.trial import TrialState

    found = []
    for stage, study in studies(job):
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            continue
        best = study.best_trial
        found.append({"stage": stage, "trial": best.number, "value": best.value,
                      "applied": best.user_attrs.get("applied", best.params),
                      "fixed": study.user_attrs.get("fixed", {}),
                      "counts": {s: len(study.get_trials(deepcopy=False, states=(getattr(TrialState, s.upper()),)))
                                 for s in ("complete", "pruned", "fail", "running")}})
    return found


def write_best(job: SweepJob) -> tuple[Path, dict]:
    """The best configuration as a recipe YAML `--config` accepts: the base recipe with the sweep's --set values,
    the winners of every stage and the last stage's best, without the stages' quick settings."""
    found = winners(job)
    if not found:
        raise SweepError(f"sweep {job.name}: no complete trial yet")
    last = found[-1]
    chosen = {}
    for winner in found:  # each stage's winner, in stage order: a later stage may re-draw a key
        chosen.update(winner["applied"])
    spec = _spec(job)
    quick_keys = {k for stage in spec.stages for k in stage.quick}
    chosen = {k: v for k, v in chosen.items() if k not in quick_keys}
    recipe = base_recipe(job, [*job.sets, *(override(k, v) for k, v in chosen.items())])
    header = [f"# asrpipe sweep {job.name} ({Path(job.spec).name}), best: stage {last['stage']} trial {last['trial']},"
              f" {job.metric} {last['value']:.4g}",
              f"# base recipe {job.config}" + (f" with --set {' '.join(job.sets)}" if job.sets else ""),
              f"# chosen: {describe(chosen)}",
              f"#   asrpipe run --task {job.task} --config {job.folder / 'best.yaml'} --to submit"]
    path = job.folder / "best.yaml"
    from pipeline.files import write_text_atomic

    write_text_atomic(path, "\n".join(header) + "\n" + yaml.safe_dump(recipe, sort_keys=False))
    return path, last


def write_plots(job: SweepJob) -> list[Path]:
    """Optuna's matplotlib plots per stage study (PNG); a plot that cannot be drawn yet (too few trials) is skipped."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as views

    from pipeline.files import save_figure

    folder = job.folder / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for stage, study in studies(job):
        for kind, draw in (("history", views.plot_optimization_history), ("importances", views.plot_param_importances),
                           ("parallel", views.plot_parallel_coordinate)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the matplotlib views are "experimental"
                try:
                    ax = draw(study)
                except (ValueError, RuntimeError, ZeroDivisionError):
                    continue
            figure = (ax[0] if hasattr(ax, "__len__") else ax).figure
            figure.set_size_inches(9, 5.5)
            written.append(save_figure(figure, folder / f"{stage}-{kind}.png"))
    return written
