"""asrpipe: a speech-recognition Kaggle competition from raw download to a scored submission, staged and cached.

    asrpipe run --task demo-hw3p2                       # download → normalize → train → select → decode → csv → submit
    asrpipe status --task demo-hw3p2                    # each stage fresh / stale / missing, and why
    asrpipe decode --task demo-hw3p2 --beam 5           # one stage (its upstream stages run only if not fresh)
    asrpipe run --task demo-hw3p2 --from select --to csv
    asrpipe run --task demo-hw3p2 --force --from decode

This module stays thin and imports nothing heavy at start-up (`asrpipe --help` never imports torch).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Speech-recognition Kaggle competitions, staged and cached: download → normalize → train → "
                       "select → decode → csv → submit.")

Task = Annotated[str, typer.Option("--task", "-t", help="profile (demo-hw3p2), task family or Kaggle slug")]
Config = Annotated[Optional[str], typer.Option("--config", "-c", help="named recipe or a YAML path")]
Sets = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="recipe override key=value (repeatable)")]
Force = Annotated[bool, typer.Option("--force", help="recompute even if the output is fresh")]
Wandb = Annotated[str, typer.Option("--wandb", help="auto | online | offline | off")]
Nproc = Annotated[int, typer.Option("--nproc", help="DDP processes for training (torchrun)")]
Workers = Annotated[int, typer.Option("--workers", help="decoder worker processes")]
Artifacts = Annotated[Path, typer.Option("--artifacts", envvar="ASRPIPE_ARTIFACTS", help="stage outputs root")]
Submissions = Annotated[Path, typer.Option("--submissions", envvar="ASRPIPE_SUBMISSIONS",
                                           help="submitted CSVs and ledger.csv")]


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def build_pipeline(task: str, config: str | None, sets: list[str] | None, artifacts: Path, submissions: Path,
                   **options):
    from pipeline.config import load_recipe
    from pipeline.engine import Pipeline
    from pipeline.tasks import stages_for
    from pipeline.tasks.profiles import resolve_profile

    profile = resolve_profile(task)
    config_name = config or profile.default_config
    recipe = load_recipe(profile.family, config_name, tuple(sets or ()))
    return Pipeline(profile, recipe, stages_for(profile.family), artifacts_root=artifacts,
                    submissions_root=submissions, options=options, config_name=config_name,
                    overrides=tuple(sets or ()))


def guarded(action) -> None:
    """Run an action; our own errors become one red line and exit status 2."""
    from pipeline.errors import AsrpipeError

    try:
        action()
    except AsrpipeError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted; the stage was left incomplete (rerun resumes or restarts it)")


@app.command()
def run(task: Task, config: Config = None, sets: Sets = None,
        start: Annotated[Optional[str], typer.Option("--from", help="first stage")] = None,
        stop: Annotated[Optional[str], typer.Option("--to", help="last stage")] = None,
        only: Annotated[Optional[str], typer.Option("--only", help="just this stage (upstream must be complete)")] = None,
        force: Force = False, wandb: Wandb = "auto", nproc: Nproc = 1, workers: Workers = 1,
        artifacts: Artifacts = Path("artifacts"), submissions: Submissions = Path("submissions")) -> None:
    """Run the pipeline (or a range of it); fresh stages are no-ops."""
    guarded(lambda: build_pipeline(task, config, sets, artifacts, submissions, wandb=wandb, nproc=nproc,
                                   workers=workers).run(start, stop, only, force))


@app.command()
def status(task: Task, config: Config = None, sets: Sets = None,
           artifacts: Artifacts = Path("artifacts"), submissions: Submissions = Path("submissions")) -> None:
    """Each stage: fresh / stale / missing / incomplete, and why."""

    def show() -> None:
        from rich.console import Console
        from rich.table import Table

        pipeline = build_pipeline(task, config, sets, artifacts, submissions)
        colours = {"fresh": "green", "stale": "yellow", "missing": "red", "incomplete": "magenta"}
        table = Table(title=f"{pipeline.profile.name} ({pipeline.config_name})", show_lines=False)
        for column in ("stage", "state", "why", "output"):
            table.add_column(column, overflow="fold")
        for line in pipeline.status():
            table.add_row(line.stage, f"[{colours[line.state]}]{line.state}[/]", line.reason, str(line.dir))
        Console(width=max(160, Console().width)).print(table)

    guarded(show)


def run_stage(stage: str, task: str, config: str | None, sets: list[str] | None, force: bool, artifacts: Path,
              submissions: Path, **options) -> None:
    """One stage: upstream stages run only if they are not fresh; --force recomputes just this stage."""

    def go() -> None:
        pipeline = build_pipeline(task, config, sets, artifacts, submissions, **options)
        names = pipeline.names()
        if stage not in names:
            fail(f"{pipeline.profile.name}: no {stage} stage (stages: {', '.join(names)})")
        index = names.index(stage)
        if index > 0:
            pipeline.run(stop=names[index - 1])
        pipeline.run(only=stage, force=force)

    guarded(go)


@app.command()
def download(task: Task, config: Config = None, sets: Sets = None, force: Force = False,
             artifacts: Artifacts = Path("artifacts"), submissions: Submissions = Path("submissions")) -> None:
    """Fetch the competition data (embedded zip for demo competitions), verify and unzip it."""
    run_stage("download", task, config, sets, force, artifacts, submissions)


@app.command()
def normalize(task: Task, config: Config = None, sets: Sets = None, force: Force = False,
              artifacts: Artifacts = Path("artifacts"), submissions: Submissions = Path("submissions")) -> None:
    """Build the validated feature stores (per-utterance CMVN or global MVN from train statistics)."""
    run_stage("normalize", task, config, sets, force, artifacts, submissions)


@app.command()
def train(task: Task, config: Config = None, sets: Sets = None, force: Force = False, wandb: Wandb = "auto",
          nproc: Nproc = 1, artifacts: Artifacts = Path("artifacts"),
          submissions: Submissions = Path("submissions")) -> None:
    """Train (resumes an interrupted run; keeps the top-k checkpoints by dev metric)."""
    run_stage("train", task, config, sets, force, artifacts, submissions, wandb=wandb, nproc=nproc)


@app.command()
def select(task: Task, config: Config = None, sets: Sets = None, force: Force = False,
           artifacts: Artifacts = Path("artifacts"), submissions: Submissions = Path("submissions")) -> None:
    """Pick the best checkpoint or average the top-N / last-N (select.method, select.n)."""
    run_stage("select", task, config, sets, force, artifacts, submissions)


@app.command()
def decode(task: Task, config: Config = None, sets: Sets = None, force: Force = False,
           beam: Annotated[Optional[int], typer.Option("--beam", help="beam width (1 = greedy)")] = None,
           backend: Annotated[Optional[str], typer.Option("--backend", help="asrpipe | ctcdecode | ctc-beam-decoder")] = None,
           workers: Workers = 1, artifacts: Artifacts = Path("artifacts"),
           submissions: Submissions = Path("submissions")) -> None:
    """Decode dev and test (greedy, beam and oracle figures on dev); log-probs are cached per checkpoint."""
    sets = list(sets or [])
    if beam is not None:
        sets.append(f"decode.beam={beam}")
    if backend is not None:
        sets.append(f"decode.backend={backend}")
    run_stage("decode", task, config, sets, force, artifacts, submissions, workers=workers)


@app.command()
def csv(task: Task, config: Config = None, sets: Sets = None, force: Force = False,
        artifacts: Artifacts = Path("artifacts"), submissions: Submissions = Path("submissions")) -> None:
    """Write the submission CSV in the competition's exact format, validated against the sample submission."""
    run_stage("csv", task, config, sets, force, artifacts, submissions)


@app.command()
def submit(task: Task, config: Config = None, sets: Sets = None, force: Force = False,
           csv_file: Annotated[Optional[Path], typer.Option("--csv", help="submit this CSV instead of the pipeline's")] = None,
           message: Annotated[str, typer.Option("--message", "-m", help="submission message")] = "",
           artifacts: Artifacts = Path("artifacts"), submissions: Submissions = Path("submissions")) -> None:
    """Score the CSV (local judge for demo competitions) and append a row to submissions/ledger.csv."""
    if csv_file is None:
        quoted = [f"submit.message={json.dumps(message)}"] if message else []  # a JSON string is a YAML string
        run_stage("submit", task, config, [*(sets or []), *quoted],
                  force, artifacts, submissions)
        return

    def given_file() -> None:
        from pipeline.stages.download import verify_layout
        from pipeline.stages.submit import submit_csv

        pipeline = build_pipeline(task, config, sets, artifacts, submissions)
        download_dir = pipeline.plan["download"].dir
        if not pipeline.plan["download"].artifact.complete:
            pipeline.run(only="download")
        _, facts = verify_layout(download_dir / "data", pipeline.profile)
        result = submit_csv(pipeline.profile, csv_file, download_dir / facts["sample_submission"], submissions,
                            message=message)
        typer.echo(f"{csv_file}: public {result['public']:.4f}  private {result['private']:.4f} "
                   f"({pipeline.profile.metric}); ledger row added to {submissions / 'ledger.csv'}")

    guarded(given_file)


@app.command()
def competitions() -> None:
    """Known competition profiles."""
    from rich.console import Console
    from rich.table import Table

    from pipeline.tasks.profiles import PROFILES

    table = Table()
    for column in ("profile", "task", "semester", "slug", "features", "csv header", "metric", "param limit"):
        table.add_column(column)
    for p in PROFILES.values():
        table.add_row(p.name, p.family, p.semester, p.slug, f"{p.feature_dim}-d {p.feature_dir}",
                      ",".join(p.csv_columns), f"{p.metric} ({p.metric_direction})",
                      f"{p.param_limit:,}" if p.param_limit else "-")
    Console().print(table)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app(prog_name="asrpipe")


if __name__ == "__main__":
    sys.exit(main())
