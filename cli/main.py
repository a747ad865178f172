"""asrpipe: a speech-recognition Kaggle competition from raw download to a scored submission, staged and cached.

    asrpipe run --task demo-hw3p2                       # download → normalize → train → select → decode → csv → submit
    asrpipe status --task demo-hw3p2                    # each stage fresh / stale / missing, and why
    asrpipe decode --task demo-hw3p2 --beam 5           # one stage (its upstream stages run only if not fresh)
    asrpipe run --task demo-hw3p2 --from select --to csv
    asrpipe run --task demo-hw3p2 --force --from decode   # recompute; never re-submits (that is --resubmit)
    asrpipe download --task hw1p2-f24 --data ~/Downloads/11785-hw1p2-f24.zip   # data fetched by browser (or a dir)
    asrpipe download --task hw1p2-f24 --data kaggle        # forget that --data: download from Kaggle again
    asrpipe submit --task hw3p2 --message "resnet34 beam20"   # quota-checked, polled until scored, ledger row
    asrpipe submit --task hw3p2 --dry-run                  # everything but the upload
    asrpipe submissions --task hw3p2                       # our submissions with scores (fills pending rows)
    asrpipe leaderboard --task hw3p2                       # top of the public leaderboard and our rank
    asrpipe train --task demo-hw3p2 --config seed003-demo --quick   # one epoch on a subset: an ablation in minutes
    asrpipe runs --task demo-hw3p2 --format md --plot curves.png    # every train run, best first
    asrpipe sweep run --task demo-hw1p2 --spec seed000-demo --trials 12 --workers 2   # Optuna; trials are cached runs
    asrpipe sweep status --task demo-hw1p2 --name seed000-demo       # then `sweep best`: the best as a recipe YAML
    asrpipe rerun --task hw3p2 --min-gain 0.05 --reserve 2   # up to date; submit only if it helps (exit 0/3/4/2)
    asrpipe schedule install --task hw3p2 --at 00:10         # a daily systemd user timer (UTC), or a cron line
    asrpipe history --task hw3p2                             # scores, dev metric, skipped reruns, rank: table + PNG

This module stays thin and imports nothing heavy at start-up (`asrpipe --help` never imports torch).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.build import build_pipeline

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Speech-recognition Kaggle competitions, staged and cached: download → normalize → train → "
                       "select → decode → csv → submit.")

Task = Annotated[str, typer.Option("--task", "-t", help="profile (demo-hw3p2), task family or Kaggle slug")]
Config = Annotated[Optional[str], typer.Option("--config", "-c", help="named recipe or a YAML path")]
Sets = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="recipe override key=value (repeatable)")]
Force = Annotated[bool, typer.Option("--force", help="recompute even if the output is fresh")]
Resubmit = Annotated[bool, typer.Option("--resubmit", help="submit the CSV again even if the ledger already holds "
                                                           "it (spends a submission)")]
Wandb = Annotated[str, typer.Option("--wandb", help="auto | online | offline | off")]
Nproc = Annotated[int, typer.Option("--nproc", help="DDP processes for training (torchrun)")]
Workers = Annotated[int, typer.Option("--workers", help="decoder worker processes")]
Quick = Annotated[bool, typer.Option("--quick", help="an ablation in minutes: one epoch on a fixed subset of the "
                                                     "training utterances (a run of its own, labelled quick)")]
QuickFraction = Annotated[float, typer.Option("--quick-fraction", min=0.0, max=1.0,
                                              help="--quick's share of the training utterances")]
Note = Annotated[Optional[str], typer.Option("--note", help="a note on the train run, shown by `asrpipe runs`")]


def device_choice(value: str) -> str:
    """--device checked at parse time (torch imported only to probe CUDA): a bad choice is one line, exit 2."""
    from pipeline.device import DeviceError, check_choice, resolve_device

    try:
        value = check_choice(value)
        if value.startswith("cuda"):
            resolve_device(value)
    except DeviceError as exc:
        fail(str(exc))
    return value


Device = Annotated[str, typer.Option("--device", callback=device_choice,
                                     help="decode on auto (CUDA when present) | cpu | cuda; not part of any cache key")]
Artifacts = Annotated[Path, typer.Option("--artifacts", envvar="ASRPIPE_ARTIFACTS", help="stage outputs root")]
Submissions = Annotated[Path, typer.Option("--submissions", envvar="ASRPIPE_SUBMISSIONS",
                                           help="submitted CSVs and ledger.csv")]


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def with_quick(sets: list[str] | None, quick: bool, fraction: float) -> list[str]:
    """--quick as recipe overrides: it changes what is trained, so it is in the train key and the folder label."""
    if not quick:
        return list(sets or ())
    if not 0.0 < fraction <= 1.0:
        fail(f"--quick-fraction must be in (0, 1], got {fraction:g}")
    return [*(sets or ()), "train.epochs=1", f"train.quick={fraction:g}"]


def keep_note(pipeline, note: str | None) -> None:
    """--note on a train run that was already fresh: store it in its run.json all the same."""
    from pipeline.files import update_json_atomic

    train_dir = pipeline.plan["train"].dir if "train" in pipeline.plan else None
    if note and train_dir is not None and train_dir.exists():
        update_json_atomic(train_dir / "run.json", note=note)


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
        force: Annotated[bool, typer.Option("--force", help="recompute the selected stages even if fresh; never "
                                                            "re-submits: an unchanged CSV already in the ledger is "
                                                            "not submitted again (that is --resubmit)")] = False,
        resubmit: Resubmit = False, wandb: Wandb = "auto", nproc: Nproc = 1, workers: Workers = 1,
        device: Device = "auto", quick: Quick = False, quick_fraction: QuickFraction = 0.2, note: Note = None,
        artifacts: Artifacts = Path("artifacts"), submissions: Submissions = Path("submissions")) -> None:
    """Run the pipeline (or a range of it); fresh stages are no-ops."""
    sets = with_quick(sets, quick, quick_fraction)

    def go() -> None:
        decodes = (only or stop or "submit") in ("decode", "csv", "submit")  # bad ensemble runs: say so up front
        pipeline = build_pipeline(task, config, sets, artifacts, submissions, strict_runs=decodes, wandb=wandb,
                                  nproc=nproc, workers=workers, device=device, resubmit=resubmit, note=note)
        pipeline.run(start, stop, only, force, resubmit)
        keep_note(pipeline, note)

    guarded(go)


@app.command()
def status(task: Task, config: Config = None, sets: Sets = None,
           artifacts: Artifacts = Path("artifacts"), submissions: Submissions = Path("submissions")) -> None:
    """Each stage: fresh / stale / missing / incomplete, and why."""

    def show() -> None:
        from rich.console import Console
        from rich.table import Table

        from pipeline.stages.download import data_source

        pipeline = build_pipeline(task, config, sets, artifacts, submissions)
        typer.echo(f"data: {data_source(pipeline.profile)}")
        colours = {"fresh": "green", "stale": "yellow", "missing": "red", "incomplete": "magenta"}
        table = Table(title=f"{pipeline.profile.name} ({pipeline.config_name})", show_lines=False)
        for column in ("stage", "state", "why", "output"):
            table.add_column(column, overflow="fold")
        for line in pipeline.status():
            table.add_row(line.stage, f"[{colours[line.state]}]{line.state}[/]", line.reason, str(line.dir))
        Console(width=max(160, Console().width)).print(table)

    guarded(show)


def run_stage(stage: str, task: str, config: str | None, sets: list[str] | None, force: bool, artifacts: Path,
              submissions: Path, data: Path | str | None = None, **options) -> None:
    """One stage: upstream stages run only if they are not fresh; --force recomputes just this stage."""

    def go() -> None:
        pipeline = build_pipeline(task, config, sets, artifacts, submissions, data, **options)
        names = pipeline.names()
        if stage not in names:
            fail(f"{pipeline.profile.name}: no {stage} stage (stages: {', '.join(names)})")
        index = names.index(stage)
        if index > 0:
            pipeline.run(stop=names[index - 1])
        pipeline.run(only=stage, force=force, resubmit=force)  # the stage named on the command line
        keep_note(pipeline, options.get("note"))

    guarded(go)


@app.command()
def download(task: Task, config: Config = None, sets: Sets = None, force: Force = False,
             data: Annotated[Optional[str], typer.Option(
                 "--data", help="use this competition zip or unpacked folder (e.g. /kaggle/input/...) instead of "
                                "downloading; remembered for later commands. --data kaggle forgets it and downloads "
                                "from Kaggle again (the embedded zip for demo competitions); a folder named kaggle: "
                                "./kaggle")] = None,
             artifacts: Artifacts = Path("artifacts"), submissions: Submissions = Path("submissions")) -> None:
    """Fetch the competition data (Kaggle; embedded zip for demo competitions; or --data), verify and unzip it."""
    run_stage("download", task, config, sets, force, artifacts, submissions,
              data if data in (None, "kaggle") else Path(data))


@app.command()
def normalize(task: Task, config: Config = None, sets: Sets = None, force: Force = False,
              artifacts: Artifacts = Path("artifacts"), submissions: Submissions = Path("submissions")) -> None:
    """Build the validated feature stores (per-utterance CMVN or global MVN from train statistics)."""
    run_stage("normalize", task, config, sets, force, artifacts, submissions)


@app.command()
def train(task: Task, config: Config = None, sets: Sets = None, force: Force = False, wandb: Wandb = "auto",
          nproc: Nproc = 1, quick: Quick = False, quick_fraction: QuickFraction = 0.2, note: Note = None,
          artifacts: Artifacts = Path("artifacts"), submissions: Submissions = Path("submissions")) -> None:
    """Train (resumes an interrupted run; keeps the top-k checkpoints by dev metric)."""
    run_stage("train", task, config, with_quick(sets, quick, quick_fraction), force, artifacts, submissions,
              wandb=wandb, nproc=nproc, note=note)


@app.command()
def runs(task: Task,
         config: Annotated[Optional[str], typer.Option("--config", "-c", help="only runs of this recipe name")] = None,
         key: Annotated[Optional[str], typer.Option("--key", help="only runs whose train key starts so")] = None,
         fmt: Annotated[str, typer.Option("--format", help="table | md | csv")] = "table",
         plot: Annotated[Optional[Path], typer.Option("--plot", help="also draw the dev metric per epoch of the "
                                                                     "listed runs into this PNG")] = None,
         artifacts: Artifacts = Path("artifacts")) -> None:
    """Every train run of a competition, best dev metric first: config and overrides, model, epochs, best and last
    dev metric, minutes, quick or full, state, note (read from the run folders, never from checkpoints)."""

    def show() -> None:
        from pipeline.runs import collect, plot_curves, render, table
        from pipeline.tasks.profiles import resolve_profile

        if fmt not in ("table", "md", "csv"):
            fail(f"--format {fmt}: expected table, md or csv")
        profile = resolve_profile(task)
        frame = table(collect(artifacts, profile.name), config=config, key=key)
        if fmt == "table":
            print_runs(frame, f"{profile.name}: {len(frame)} train runs under {artifacts / profile.name / 'train'}")
        else:
            sys.stdout.write(render(frame, fmt) + ("\n" if fmt == "md" else ""))
        if plot is not None:
            typer.echo(f"curves: {plot_curves(frame, plot)}", err=fmt != "table")

    guarded(show)


def print_runs(frame, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from pipeline.runs import COLUMNS

    metric = next((m for m in frame["metric"] if m), "dev") if len(frame) else "dev"
    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(f"{column} {metric}" if column in ("best", "last") else column, overflow="fold")
    for _, row in frame.iterrows():
        cells = [_cell(row[c]) for c in COLUMNS]
        table.add_row(*cells)
    Console(width=max(200, Console().width)).print(table)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float) and value.is_integer() and abs(value) > 9999:  # a parameter count pandas made float
        value = int(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int) and value > 9999:
        return f"{value:,}"
    return str(value)


@app.command()
def select(task: Task, config: Config = None, sets: Sets = None, force: Force = False,
           artifacts: Artifacts = Path("artifacts"), submissions: Submissions = Path("submissions")) -> None:
    """Pick the best checkpoint or average the top-N / last-N (select.method, select.n)."""
    run_stage("select", task, config, sets, force, artifacts, submissions)


@app.command()
def decode(task: Task, config: Config = None, sets: Sets = None, force: Force = False,
           beam: Annotated[Optional[int], typer.Option("--beam", help="beam width (1 = greedy)")] = None,
           backend: Annotated[Optional[str], typer.Option("--backend", help="asrpipe | ctcdecode | ctc-beam-decoder | cuda-ctc")] = None,
           ensemble: Annotated[Optional[str], typer.Option(
               "--ensemble", help="other train runs to average in, comma-separated keys from `asrpipe runs` "
                                  "(sets decode.ensemble_runs)")] = None,
           workers: Workers = 1, device: Device = "auto", artifacts: Artifacts = Path("artifacts"),
           submissions: Submissions = Path("submissions")) -> None:
    """Decode dev and test (greedy, beam and oracle figures on dev); log-probs are cached per checkpoint."""
    sets = list(sets or [])
    if ensemble is not None:
        refs = [ref.strip() for ref in ensemble.split(',') if ref.strip()]
        sets.append(f"decode.ensemble_runs={json.dumps(refs)}")
    if beam is not None:
        sets.append(f"decode.beam={beam}")
    if backend is not None:
        sets.append(f"decode.backend={backend}")
    run_stage("decode", task, config, sets, force, artifacts, submissions, workers=workers, device=device,
              strict_runs=True)


@app.command()
def csv(task: Task, config: Config = None, sets: Sets = None, force: Force = False,
        artifacts: Artifacts = Path("artifacts"), submissions: Submissions = Path("submissions")) -> None:
    """Write the submission CSV in the competition's exact format, validated against the sample submission."""
    run_stage("csv", task, config, sets, force, artifacts, submissions)


Wait = Annotated[float, typer.Option("--wait", help="seconds to poll Kaggle for the score before leaving the "
                                                     "ledger row pending")]


@app.command()
def submit(task: Task, config: Config = None, sets: Sets = None,
           force: Annotated[bool, typer.Option("--force", help="recompute a fresh submit stage; never re-submits a "
                                                               "CSV already in the ledger (that is --resubmit)")] = False,
           resubmit: Resubmit = False,
           csv_file: Annotated[Optional[Path], typer.Option("--csv", help="submit this CSV instead of the pipeline's")] = None,
           message: Annotated[str, typer.Option("--message", "-m", help="submission message")] = "",
           dry_run: Annotated[bool, typer.Option("--dry-run", help="every check (format, ledger, quota) but no "
                                                                   "upload and no ledger row")] = False,
           wait: Wait = 600.0,
           artifacts: Artifacts = Path("artifacts"), submissions: Submissions = Path("submissions")) -> None:
    """Validate the CSV, refuse one already in the ledger (unless --resubmit), then judge it locally (demo
    competitions) or submit it to Kaggle (quota checked, polled until scored); a row in submissions/ledger.csv."""
    quoted = [f"submit.message={json.dumps(message)}"] if message else []  # a JSON string is a YAML string
    if csv_file is None and not dry_run:
        run_stage("submit", task, config, [*(sets or []), *quoted], force or resubmit, artifacts, submissions,
                  resubmit=resubmit, wait=wait)
        return

    def given_file() -> None:
        from pipeline.stages.submit import pipeline_inputs, submit_csv

        pipeline = build_pipeline(task, config, [*(sets or []), *quoted], artifacts, submissions)
        profile = pipeline.profile
        if csv_file is None:  # --dry-run of the pipeline's own CSV: bring it up to date first
            pipeline.run(stop="csv")
            inputs = pipeline_inputs({name: p.artifact for name, p in pipeline.plan.items()})
            csv_path, sample = inputs["csv_path"], inputs["sample"]
            profile = profile.reconciled(inputs["detected"])
            extra = {k: inputs[k] for k in ("keys", "dev_metric", "decode_params")}
        else:
            download = pipeline.plan["download"].artifact
            if not download.complete:
                pipeline.run(only="download")
            facts = download.manifest["metrics"]
            profile = profile.reconciled(facts.get("detected"))
            csv_path, sample, extra = csv_file, download.dir / facts["sample_submission"], {}
        result = submit_csv(profile, csv_path, sample, submissions, message=message, resubmit=resubmit,
                            dry_run=dry_run, wait=wait, log=lambda line: typer.echo(f"      {line}"), **extra)
        typer.echo(describe_submission(csv_path, profile, result, submissions))

    guarded(given_file)


def describe_submission(csv_path: Path, profile, result: dict, submissions: Path) -> str:
    if result.get("dry_run"):
        quota = f"; {result['remaining']} submissions left today" if "remaining" in result else ""
        message = f"; message: {result['description']}" if result.get("description") else ""
        return f"{csv_path}: valid, not in the ledger{quota}{message} (dry run: nothing uploaded)"
    if result["target"] == "local":
        return (f"{csv_path}: public {result['public']:.4f}  private {result['private']:.4f} ({profile.metric}); "
                f"ledger row added to {submissions / 'ledger.csv'}")
    if result["status"] == "pending":
        return (f"{csv_path}: submitted as {result['kaggle_ref']}, not scored yet; ledger row pending "
                f"(`asrpipe submissions --task {profile.name}` fills it in)")
    return (f"{csv_path}: Kaggle public {result['public']} ({profile.metric}), submission {result['kaggle_ref']}; "
            f"ledger row added to {submissions / 'ledger.csv'}")


def kaggle_profile(task: str):
    from pipeline.tasks.profiles import resolve_profile

    profile = resolve_profile(task)
    if not profile.demo and not profile.slug:
        fail(f"{profile.name}: no known Kaggle slug")
    return profile


@app.command("submissions")
def submissions_command(task: Task, submissions: Submissions = Path("submissions")) -> None:
    """Our submissions with their scores (Kaggle, or the ledger for demo competitions); fills in pending ledger
    rows; saved as submissions/<competition>/submissions.csv."""

    def show() -> None:
        from rich.console import Console
        from rich.table import Table

        from pipeline.stages.submit import refresh_pending, write_rows_csv
        from pipeline.submission import read_ledger

        profile = kaggle_profile(task)
        if profile.demo:
            rows = [{"ref": "", "date": r["time"], "description": r["message"], "status": r["status"],
                     "public": r["public_score"], "private": r["private_score"], "error": r.get("error", "")}
                    for r in read_ledger(submissions) if r["competition"] == profile.name]
            quota = "local judge: no quota"
        else:
            from pipeline.kaggle_client import Kaggle

            client = Kaggle(log=lambda line: typer.echo(line, err=True))
            rows = client.submissions(profile.slug)
            filled = refresh_pending(profile, rows, submissions)
            limits = client.limits(profile.slug)
            quota = (f"{limits['remaining']} submissions left today ({limits['today']} made)"
                     + (f"; {filled} pending ledger rows filled in" if filled else ""))
        ledger = {r["csv_sha256"][:12]: r for r in read_ledger(submissions) if r["competition"] == profile.name}
        columns = ["ref", "date", "status", "public", "private", "description", "error"]
        saved = write_rows_csv(submissions / profile.name / "submissions.csv", rows, columns)
        table = Table(title=f"{profile.name} submissions", caption=f"{quota}; saved to {saved}")
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(str(row.get(c, "")) for c in columns))
        Console(width=max(160, Console().width)).print(table)
        if not rows:
            typer.echo(f"no submissions yet ({len(ledger)} in the ledger)")

    guarded(show)


@app.command()
def leaderboard(task: Task, top: Annotated[int, typer.Option("--top", help="rows to show")] = 20,
                submissions: Submissions = Path("submissions")) -> None:
    """The top of the public leaderboard and our rank; saved as submissions/<competition>/leaderboard.csv."""

    def show() -> None:
        from rich.console import Console
        from rich.table import Table

        from pipeline.kaggle_client import Kaggle
        from pipeline.stages.submit import write_rows_csv

        profile = kaggle_profile(task)
        if profile.demo:
            fail(f"{profile.name}: a demo competition has no public leaderboard (its scores are in "
                 f"`asrpipe submissions --task {profile.name}`)")
        client = Kaggle(log=lambda line: typer.echo(line, err=True))
        entries = client.leaderboard(profile.slug)
        ours = {s["team"] for s in client.submissions(profile.slug) if s.get("team")}
        ours.add(client.credentials.username or "")
        mine = next((e for e in entries if e["team"] in ours), None)
        saved = write_rows_csv(submissions / profile.name / "leaderboard.csv", entries,
                               ["rank", "team", "score", "date"])
        if mine:  # rank over time, for `asrpipe history`
            record_rank(submissions / profile.name / "ranks.csv", mine, len(entries))
        where = (f"our rank: {mine['rank']} of {len(entries)} ({mine['team']}, {mine['score']})" if mine
                 else f"we are not among the {len(entries)} teams listed")
        table = Table(title=f"{profile.name} public leaderboard ({profile.metric}, {profile.metric_direction} is best)")
        for column in ("rank", "team", "score", "date"):
            table.add_column(column)
        shown = entries[:top] + ([mine] if mine and mine["rank"] > top else [])
        for entry in shown:
            style = "bold green" if mine is not None and entry is mine else None
            table.add_row(str(entry["rank"]), entry["team"], entry["score"], entry["date"], style=style)
        Console(width=max(120, Console().width)).print(table)
        typer.echo(f"{where}; saved to {saved}")

    guarded(show)


def record_rank(path: Path, mine: dict, teams: int) -> None:
    import csv as csv_module
    import time

    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv_module.writer(handle)
        if new:
            writer.writerow(["time", "rank", "teams", "score"])
        writer.writerow([time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), mine["rank"], teams, mine["score"]])


@app.command()
def competitions() -> None:
    """Known competition profiles."""
    from rich.console import Console
    from rich.table import Table

    from pipeline.tasks.profiles import PROFILES

    from pipeline.tasks.profiles import FAMILY_DEFAULT

    table = Table(caption=f"--task {' / '.join(FAMILY_DEFAULT)} = {', '.join(FAMILY_DEFAULT.values())}; "
                          "facts under 'detected' are read from the data at download (formats doc: conflicting)")
    for column in ("profile", "task", "semester", "slug", "features", "markers", "labels", "test order",
                   "csv header", "metric", "param limit", "detected"):
        table.add_column(column, overflow="fold", no_wrap=column != "detected")
    for p in PROFILES.values():
        table.add_row(p.name, p.family, p.semester, p.slug or "(not found)", f"{p.feature_shape} {p.feature_dir}",
                      "/".join(p.markers) if p.markers else "none", f"{len(p.symbols)} {p.label_format}",
                      p.test_order or "sorted", ",".join(p.csv_columns), f"{p.metric} ({p.metric_direction})",
                      f"{p.param_limit:,}" if p.param_limit else "-", ", ".join(p.conflicts) or "-")
    Console(width=max(240, Console().width)).print(table)


# ---- reruns, schedules, history ------------------------------------------------------------------------------------

@app.command()
def rerun(task: Task, config: Config = None, sets: Sets = None,
          min_gain: Annotated[float, typer.Option("--min-gain", help="submit only if the dev metric beats the best "
                                                                     "submitted one by this much")] = 0.0,
          reserve: Annotated[int, typer.Option("--reserve", min=0, help="submissions of the day kept for manual "
                                                                        "tries: skip unless more are left")] = 0,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="run the pipeline and the gate; say what would "
                                                                  "happen; submit nothing")] = False,
          wait: Wait = 600.0, wandb: Wandb = "auto", artifacts: Artifacts = Path("artifacts"),
          submissions: Submissions = Path("submissions")) -> None:
    """Bring the pipeline up to date (fresh stages are no-ops) and submit only when it helps: never a CSV already
    submitted, never a dev metric that does not beat the best submitted one, never the reserve of the day. Exit
    status: 0 submitted, 3 skipped, 4 another rerun holds the lock, 2 error."""
    from pipeline.errors import AsrpipeError
    from pipeline.rerun import LOCKED, RerunLocked

    try:
        pipeline = build_pipeline(task, config, sets, artifacts, submissions, wandb=wandb)
        from pipeline.rerun import rerun as run_rerun

        outcome = run_rerun(pipeline, min_gain=min_gain, reserve=reserve, dry_run=dry_run, wait=wait,
                            log=lambda line: typer.echo(f"      {line}"))
    except RerunLocked as exc:
        typer.secho(f"locked: {exc}", fg="yellow", err=True)
        raise typer.Exit(LOCKED)
    except AsrpipeError as exc:
        fail(str(exc))
    typer.echo(f"{outcome.decision}: {outcome.reason}  [dev {outcome.metric}; {outcome.predicted}]")
    raise typer.Exit(outcome.status)


schedule_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                           help="Run `asrpipe rerun` every day (a systemd user timer, UTC; or a cron line).")
app.add_typer(schedule_app, name="schedule")


@schedule_app.command("install")
def schedule_install(task: Task, at: Annotated[str, typer.Option("--at", help="HH:MM, UTC (Kaggle's quota day)")] = "00:10",
                     config: Config = None, sets: Sets = None,
                     min_gain: Annotated[float, typer.Option("--min-gain")] = 0.0,
                     reserve: Annotated[int, typer.Option("--reserve", min=0)] = 0,
                     artifacts: Artifacts = Path("artifacts"), submissions: Submissions = Path("submissions")) -> None:
    """Write (and enable, where systemctl --user works) a timer that runs the rerun daily at --at UTC."""

    def go() -> None:
        from pipeline.schedule import asrpipe_command, install

        command = [*asrpipe_command(), "rerun", "--task", task]
        if config:
            command += ["--config", str(Path(config).resolve()) if config.endswith((".yaml", ".yml")) else config]
        for assignment in sets or ():
            command += ["--set", assignment]
        command += ["--min-gain", f"{min_gain:g}", "--reserve", str(reserve), "--artifacts",
                    str(artifacts.resolve()), "--submissions", str(submissions.resolve())]
        install(task, at, command, Path.cwd(), submissions, log=typer.echo)

    guarded(go)


@schedule_app.command("list")
def schedule_list() -> None:
    """The installed rerun timers: when, what they run, whether systemd has them enabled."""
    from pipeline.schedule import installed, unit_dir

    rows = installed()
    if not rows:
        typer.echo(f"no rerun schedules in {unit_dir()}")
    for row in rows:
        typer.echo(f"{row['unit']}  {row['when']}  ({row['enabled']})\n    {row['command']}")


@schedule_app.command("remove")
def schedule_remove(task: Task) -> None:
    """Disable and delete the task's rerun timer."""

    def go() -> None:
        from pipeline.schedule import remove

        remove(task, log=typer.echo)

    guarded(go)


@app.command()
def history(task: Task, submissions: Submissions = Path("submissions")) -> None:
    """Submissions over time: public/private score, dev metric, skipped reruns, leaderboard rank; a table and a PNG
    (submissions/<competition>/history.png)."""

    def show() -> None:
        from pipeline.history import history as frame_of, plot, ranks
        from pipeline.tasks.profiles import resolve_profile

        profile = resolve_profile(task)
        frame = frame_of(submissions, profile.name)
        if frame.empty:
            fail(f"{profile.name}: no submissions or reruns recorded under {submissions} yet")
        shown = frame.assign(time=frame["time"].dt.strftime("%Y-%m-%d %H:%M"))
        typer.echo(shown.to_markdown(index=False, floatfmt=".4g"))
        path = plot(frame, ranks(submissions, profile.name), submissions / profile.name / "history.png", profile.metric)
        typer.echo(f"plot: {path}")

    guarded(show)


# ---- sweeps ---------------------------------------------------------------------------------------------------------

sweep_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="Hyperparameter sweeps on Optuna: W&B sweep YAML or a staged search; trials are "
                             "ordinary cached train runs.")
app.add_typer(sweep_app, name="sweep")
SweepName = Annotated[Optional[str], typer.Option("--name", help="the sweep's name (default: the spec's)")]
Storage = Annotated[Optional[str], typer.Option(
    "--storage", help="an RDB URL (sqlite:///sweep.db, postgresql://user@host/db) that workers on several machines "
                      "join; default: a journal file in artifacts/<competition>/sweeps/<name>/")]


@sweep_app.command("run")
def sweep_run(task: Task,
              spec: Annotated[str, typer.Option("--spec", help="a named spec (pipeline/configs/<family>/sweeps/) or "
                                                               "a W&B sweep / staged YAML file")],
              name: SweepName = None, config: Config = None, sets: Sets = None,
              trials: Annotated[Optional[int], typer.Option("--trials", min=1, help="trials per stage (default: the "
                                                                                    "spec's run_cap or grid)")] = None,
              minutes: Annotated[Optional[float], typer.Option("--minutes", help="wall-clock budget per worker")] = None,
              workers: Annotated[int, typer.Option("--workers", min=1, help="worker processes on this machine")] = 1,
              storage: Storage = None,
              backend: Annotated[str, typer.Option("--backend", help="optuna | wandb (a real W&B sweep; online)")] = "optuna",
              heartbeat: Annotated[int, typer.Option("--heartbeat", min=1, help="RDB storages: seconds between a "
                                                                               "worker's heartbeats")] = 60,
              wandb: Wandb = "auto", artifacts: Artifacts = Path("artifacts"),
              submissions: Submissions = Path("submissions")) -> None:
    """Run a sweep: every trial trains through the pipeline (cached by content), reports each epoch's dev metric,
    and may be pruned; then the stage winners, the best recipe (best.yaml) and the plots."""

    def go() -> None:
        from pipeline.sweeps.study import prepare, run_workers, work

        if backend not in ("optuna", "wandb"):
            fail(f"--backend {backend}: expected optuna or wandb")
        job = prepare(task, spec, name, config, list(sets or ()), artifacts, submissions, storage=storage,
                      wandb=wandb, trials=trials, minutes=minutes, heartbeat=heartbeat)
        if backend == "wandb":
            from pipeline.sweeps.wandb_backend import run_agent

            run_agent(job, count=trials)
            return
        if workers > 1:
            failed = run_workers(job, workers)
            if failed:
                fail(f"{failed} of {workers} sweep workers failed (their lines above say why)")
        else:
            work(job, log=typer.echo)
        report_sweep(job)

    guarded(go)


def report_sweep(job) -> None:
    from pipeline.sweeps.report import winners, write_best, write_plots

    found = winners(job)
    if len(found) > 1 or job.stages != ["sweep"]:
        typer.echo("stage winners:")
        for w in found:
            counts = ", ".join(f"{n} {s}" for s, n in w["counts"].items() if n)
            typer.echo(f"  {w['stage']:<14} trial {w['trial']:<3} {job.metric} {w['value']:.4g}  "
                       f"{' '.join(f'{k}={v}' for k, v in w['applied'].items())}  ({counts})")
    elif found:
        counts = ", ".join(f"{n} {s}" for s, n in found[0]["counts"].items() if n)
        typer.echo(f"trials: {counts}")
    path, last = write_best(job)
    typer.echo(f"best: trial {last['trial']} ({last['stage']}), {job.metric} {last['value']:.4g} → {path}")
    plots = write_plots(job)
    if plots:
        typer.echo(f"plots: {len(plots)} PNGs in {plots[0].parent} (history, importances, parallel per stage)")


def recorded_sweep(task: str, name: str, storage: str | None, artifacts: Path):
    from pipeline.sweeps.study import recorded
    from pipeline.tasks.profiles import resolve_profile

    job = recorded(artifacts / resolve_profile(task).name / "sweeps" / name)
    job.artifacts = str(artifacts)
    if storage:
        job.storage = storage
    return job


@sweep_app.command("status")
def sweep_status(task: Task, name: Annotated[str, typer.Option("--name", help="the sweep's name")],
                 storage: Storage = None,
                 fmt: Annotated[str, typer.Option("--format", help="table | md | csv")] = "table",
                 artifacts: Artifacts = Path("artifacts")) -> None:
    """The sweep's trials: stage, number, state, parameters, dev metric, epochs, minutes, train folder."""

    def show() -> None:
        from pipeline.sweeps.report import trial_rows

        if fmt not in ("table", "md", "csv"):
            fail(f"--format {fmt}: expected table, md or csv")
        job = recorded_sweep(task, name, storage, artifacts)
        frame = trial_rows(job).rename(columns={"value": job.metric})
        if fmt == "csv":
            sys.stdout.write(frame.to_csv(index=False))
        elif fmt == "md":
            typer.echo(frame.to_markdown(index=False, floatfmt=".4g"))
        else:
            from rich.console import Console
            from rich.table import Table

            table = Table(title=f"sweep {job.name} on {job.competition}: {len(frame)} trials")
            for column in frame.columns:
                table.add_column(column, overflow="fold")
            for _, row in frame.iterrows():
                table.add_row(*(_cell(row[c]) for c in frame.columns))
            Console(width=max(160, Console().width)).print(table)

    guarded(show)


@sweep_app.command("best")
def sweep_best(task: Task, name: Annotated[str, typer.Option("--name", help="the sweep's name")],
               storage: Storage = None, artifacts: Artifacts = Path("artifacts")) -> None:
    """Write the best configuration as a recipe YAML (`--config` takes it) and print its path."""

    def go() -> None:
        report_sweep(recorded_sweep(task, name, storage, artifacts))

    guarded(go)


@sweep_app.command("trial", hidden=True, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sweep_trial(ctx: typer.Context, task: Task, name: Annotated[str, typer.Option("--name")],
                config: Config = None, sets: Sets = None, artifacts: Artifacts = Path("artifacts"),
                submissions: Submissions = Path("submissions")) -> None:
    """One trial for `wandb agent` (its ${args_no_equals}: --train.lr 0.001 ...): train with those values."""
    from pipeline.sweeps.wandb_backend import agent_sets

    try:
        extra = agent_sets(ctx.args)
    except ValueError as exc:
        fail(str(exc))
    run_stage("train", task, config, [*(sets or ()), *extra], False, artifacts, submissions, wandb="online",
              group=name, note=f"W&B sweep {name}")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app(prog_name="asrpipe")


if __name__ == "__main__":
    sys.exit(main())
