"""Run a sweep on Optuna: each trial is an ordinary pipeline run (download → normalize → train) with `--set`
overrides, so its train stage lands in the normal content-addressed folders and a repeated configuration costs
nothing; its dev metric goes to the study epoch by epoch, and a pruned trial stops cleanly (its folder stays
incomplete and resumes if the same configuration is run again).

    method grid / random / bayes  →  GridSampler / RandomSampler / TPESampler (constant_liar for parallel workers)
    goal                          →  the study's direction (checked against the family's metric)
    early_terminate hyperband     →  HyperbandPruner(min_iter, max_resource = the trial's epochs, eta); otherwise
                                     MedianPruner, which leaves quick one-epoch ablations alone
    storage                       →  a journal file in artifacts/<competition>/sweeps/<name>/ (worker processes on
                                     one machine), or --storage URL: an RDB (sqlite, PostgreSQL) that workers on
                                     several machines join, with heartbeats: a killed worker's trial is failed and
                                     retried instead of staying RUNNING

A staged search runs its stages in order, one study each (`<name>/<stage>`); a stage starts from the winners of the
stages before it (stored in the stage's study, so every worker uses the same ones).

    python -m pipeline.sweeps.study JOB.json      # one worker (what `asrpipe sweep run --workers N` starts N of)
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.errors import AsrpipeError
from pipeline.sweeps.spec import Spec, Stage, load_spec, override

NEIGHBOURS = [0.5, 1.0, 2.0]    # seed 003: the √C-scaled LR, and half and twice it
STORAGE_ENV = "ASRPIPE_SWEEP_STORAGE"


class SweepError(AsrpipeError, RuntimeError):
    pass


@dataclass
class SweepJob:
    """Everything a worker needs; the same for every worker of a sweep (JSON, so a subprocess gets it too)."""
    task: str
    spec: str                       # the spec's path
    name: str
    config: str
    sets: list[str]
    artifacts: str
    submissions: str
    storage: str | None = None      # None: the journal file in the sweep folder
    wandb: str = "auto"
    trials: int | None = None       # per stage; None: the spec's (grid size, stage.trials, run_cap), else 10
    minutes: float | None = None    # this worker's wall-clock budget
    heartbeat: int = 60             # RDB storages: seconds between heartbeats; stale after 2 ×
    worker: int = 0
    metric: str = ""
    direction: str = "min"
    competition: str = ""
    stages: list[str] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return Path(self.artifacts) / self.competition / "sweeps" / self.name

    def study_name(self, stage: str) -> str:
        return self.name if self.stages == ["sweep"] else f"{self.name}/{stage}"


def prepare(task: str, spec_name: str, name: str | None, config: str | None, sets: list[str], artifacts: Path,
            submissions: Path, **options) -> SweepJob:
    """Load and check the spec against the recipe (one line and nothing run when it is wrong), and record the sweep
    in its folder (sweep.json), so that `sweep status` and `sweep best` find it."""
    import importlib

    from pipeline.tasks import FAMILIES
    from pipeline.tasks.profiles import resolve_profile
    from pipeline.sweeps.spec import check_against_recipe

    profile = resolve_profile(task)
    spec = load_spec(profile.family, spec_name)
    config = config or spec.config or profile.default_config
    trained = importlib.import_module(f"pipeline.training.{FAMILIES[profile.family].kind}").TASK
    check_against_recipe(spec, profile.family, config, sets, trained.metric, trained.direction)
    job = SweepJob(task=task, spec=str(spec.path.resolve()), name=name or spec.name, config=config, sets=list(sets),
                   artifacts=str(artifacts), submissions=str(submissions), metric=trained.metric,
                   direction=trained.direction, competition=profile.name, stages=[s.name for s in spec.stages],
                   **options)
    job.folder.mkdir(parents=True, exist_ok=True)
    if job.storage:  # create an RDB's tables now, once: workers starting together would race to create them
        storage_for(job)
    from pipeline.files import write_json_atomic

    write_json_atomic(job.folder / "sweep.json", {**asdict(job), "storage": masked(job.storage), "worker": None})
    return job


def masked(url: str | None) -> str | None:
    """A storage URL without its password (sweep.json and logs never hold one)."""
    if not url or "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in credentials else ''}@{host}"


def recorded(folder: Path) -> SweepJob:
    path = folder / "sweep.json"
    if not path.exists():
        raise SweepError(f"{folder}: no sweep here (run `asrpipe sweep run` first)")
    data = json.loads(path.read_text())
    data.pop("worker", None)
    return SweepJob(**data)


# ---- storage and studies ------------------------------------------------------------------------------------------

def storage_for(job: SweepJob):
    import warnings

    import optuna
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if job.storage is None:
        job.folder.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(job.folder / "journal.log")))
    if "***" in job.storage:
        raise SweepError(f"storage {job.storage}: the password is not recorded; pass --storage again")
    try:
        with warnings.catch_warnings():  # heartbeats and their retry callback are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(job.storage, heartbeat_interval=job.heartbeat, grace_period=2 * job.heartbeat,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's errors: driver missing, refused, bad URL
        raise SweepError(f"--storage {masked(job.storage)}: cannot open it ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0][:160]})") from None


def open_study(job: SweepJob, stage: Stage, storage, epochs: int):
    import optuna

    seed = None  # every worker, machine and resumed run draws its own points (a fixed seed would repeat them)
    sweep = stage.sweep
    if sweep.method == "grid":
        space = sweep.grid()
        if stage.lr_neighbours:
            space["lr_multiplier"] = NEIGHBOURS
        sampler = optuna.samplers.GridSampler(space, seed=seed)
    elif sweep.method == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                             n_startup_trials=min(10, max(2, trials_for(job, stage) // 3)))
    if sweep.early_terminate is not None:
        rule = sweep.early_terminate
        pruner = optuna.pruners.HyperbandPruner(min_resource=rule.min_iter or 1,
                                                max_resource=max(rule.max_iter or epochs, rule.min_iter or 1),
                                                reduction_factor=int(rule.eta))
    else:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.create_study(storage=storage, study_name=job.study_name(stage.name), sampler=sampler,
                               pruner=pruner, direction="minimize" if job.direction == "min" else "maximize",
                               load_if_exists=True)


def trials_for(job: SweepJob, stage: Stage) -> int:
    if job.trials:
        return job.trials
    grid = stage.sweep.grid_size() * (len(NEIGHBOURS) if stage.lr_neighbours else 1)
    return stage.trials or grid or stage.sweep.run_cap or 10


def finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


# ---- one trial ----------------------------------------------------------------------------------------------------

def base_recipe(job: SweepJob, overrides: list[str]) -> dict:
    from pipeline.config import load_recipe
    from pipeline.tasks.profiles import resolve_profile

    return load_recipe(resolve_profile(job.task).family, job.config, tuple(overrides))


def objective_for(job: SweepJob, stage: Stage, fixed: dict, log):
    """The study's objective: draw the parameters, run the pipeline to train, report each epoch, return the best."""
    import optuna

    from pipeline.build import build_pipeline
    from pipeline.training.launch import StoppedByCallback

    quick = [override(k, v) for k, v in stage.quick.items()]
    before = [*job.sets, *(override(k, v) for k, v in fixed.items()), *quick]

    def objective(trial) -> float:
        applied = {key: parameter.sample(trial, key) for key, parameter in stage.sweep.parameters.items()}
        if stage.lr_scaling:
            reference = base_recipe(job, before)["train"]
            multiplier = trial.suggest_categorical("lr_multiplier", NEIGHBOURS) if stage.lr_neighbours else 1.0
            scale = math.sqrt(applied["train.batch_size"] / reference["batch_size"])
            applied["train.lr"] = float(f"{reference['lr'] * scale * multiplier:.4g}")
        overrides = merged([*before, *(override(k, v) for k, v in applied.items())])
        trial.set_user_attr("applied", applied)
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")

        def on_epoch(row: dict):
            value = row.get(job.metric)
            if value is None:
                return None
            trial.report(value, row["epoch"])
            if row["epoch"] >= planned:  # the run is over anyway: a complete run is worth more than a pruned one
                return None
            return "pruned by the sweep" if trial.should_prune() else None

        pipeline = build_pipeline(job.task, job.config, overrides, Path(job.artifacts), Path(job.submissions),
                                  wandb=job.wandb, group=job.name, progress=False, on_epoch=on_epoch,
                                  note=f"sweep {job.name}, {stage.name} trial {trial.number}")
        train = pipeline.plan["train"]
        planned = train.params["train"]["epochs"]
        trial.set_user_attr("train_dir", str(train.dir))
        cached = pipeline.is_fresh("train")
        started = time.time()
        try:
            pipeline.run(stop="train")
        except StoppedByCallback as stop:
            record(trial, stop.metrics, started)
            log(f"trial {trial.number}: {describe(varied(stage, applied))} → pruned after epoch "
                f"{stop.metrics['epochs']}")
            raise optuna.TrialPruned() from None
        metrics = train.artifact.manifest["metrics"]
        record(trial, metrics, started)
        if cached:  # a repeated configuration: replay its epochs so the pruner sees them too
            for row in json.loads((train.dir / "history.json").read_text()):
                if row.get(job.metric) is not None:
                    trial.report(row[job.metric], row["epoch"])
        value = metrics.get(f"best_{job.metric}")
        if value is None:
            raise SweepError(f"trial {trial.number}: {train.dir} has no dev {job.metric}")
        log(f"trial {trial.number}: {describe(varied(stage, applied))} → {job.metric} {value:.4g}"
            f"{' (cached)' if cached else ''} in {metrics.get('epochs')} epochs")
        return float(value)

    return objective


def merged(assignments: list[str]) -> list[str]:
    """--set assignments with one per key, the last one winning (a stage may re-draw a key an earlier stage fixed)."""
    last = {}
    for assignment in assignments:
        last[assignment.partition("=")[0]] = assignment
    return list(last.values())


def record(trial, metrics: dict, started: float) -> None:
    trial.set_user_attr("epochs", metrics.get("epochs"))
    trial.set_user_attr("stop_reason", metrics.get("stop_reason"))
    trial.set_user_attr("minutes", round((time.time() - started) / 60, 3))


def varied(stage: Stage, applied: dict) -> dict:
    """The values a trial drew (its log line leaves out the spec's constants)."""
    constant = {k for k, p in stage.sweep.parameters.items() if p.kind == "constant"}
    return {k: v for k, v in applied.items() if k not in constant}


def describe(applied: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in applied.items())


# ---- a worker -----------------------------------------------------------------------------------------------------

def work(job: SweepJob, log=print) -> dict:
    """Run the stages in order on this worker; returns {stage: (trial number, value, applied)} of the winners."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    spec = _spec(job)
    storage = storage_for(job)
    deadline = time.time() + 60 * job.minutes if job.minutes else None
    fixed: dict = {}
    winners = {}
    for stage in spec.stages:
        reference = base_recipe(job, [*job.sets, *(override(k, v) for k, v in {**fixed, **stage.quick}.items())])
        study = open_study(job, stage, storage, epochs=reference["train"]["epochs"])
        study.set_user_attr("fixed", fixed)  # what this stage starts from (recomputed from the storage every run)
        wanted = trials_for(job, stage)
        prefix = "" if spec.plain else f"[{stage.name}] "
        if finished(study) < wanted and (deadline is None or time.time() < deadline):
            log(f"{prefix}study {study.study_name}: {finished(study)}/{wanted} trials done"
                + (f"; fixed from earlier stages: {describe(fixed)}" if fixed else ""))
            study.optimize(objective_for(job, stage, fixed, lambda line: log(prefix + line)),
                           callbacks=[MaxTrialsCallback(wanted, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                                      StopAfterFailures(log=lambda line: log(prefix + line))],
                           timeout=None if deadline is None else max(1.0, deadline - time.time()),
                           catch=(AsrpipeError,))  # a failed trial (say, out of memory) is one FAIL row
        wait_for_others(study, storage, deadline)
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            raise SweepError(f"{study.study_name}: no trial completed; nothing to carry to the next stage")
        best = study.best_trial
        winners[stage.name] = {"trial": best.number, "value": best.value, "applied": best.user_attrs["applied"]}
        fixed = {**fixed, **best.user_attrs["applied"]}
        log(f"{prefix}winner: trial {best.number}, {describe(best.user_attrs['applied'])} → {job.metric} "
            f"{best.value:.4g}")
    return winners


class StopAfterFailures:
    """Stop this worker's study after `limit` failed trials in a row (missing data, out of memory for every
    configuration …): failures do not count toward --trials, so they would otherwise go on for ever."""

    def __init__(self, limit: int = 3, log=print):
        self.limit, self.streak, self.log = limit, 0, log

    def __call__(self, study, trial) -> None:
        from optuna.trial import TrialState

        self.streak = self.streak + 1 if trial.state == TrialState.FAIL else 0
        if self.streak >= self.limit:
            self.log(f"{self.limit} trials failed in a row (see the lines above); this worker stops")
            study.stop()


def _spec(job: SweepJob) -> Spec:
    from pipeline.tasks.profiles import resolve_profile

    return load_spec(resolve_profile(job.task).family, job.spec)


def wait_for_others(study, storage, deadline: float | None, poll: float = 1.0, longest: float = 1800.0) -> None:
    """Other workers' trials of this stage finish before its winner is taken; stale RDB trials are failed. A journal
    has no heartbeat, so a killed worker's trial stays RUNNING there: give up waiting after `longest` seconds."""
    import optuna
    from optuna.trial import TrialState

    give_up = time.time() + longest if deadline is None else min(deadline, time.time() + longest)
    while study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) and time.time() < give_up:
        if isinstance(storage, optuna.storages.RDBStorage):
            optuna.storages.fail_stale_trials(study)
        time.sleep(poll)


# ---- several workers ----------------------------------------------------------------------------------------------

def run_workers(job: SweepJob, workers: int) -> int:
    """`workers` processes on this machine, each `python -m pipeline.sweeps.study JOB.json`; torch threads are shared
    out among them. Returns the number of workers that failed."""
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    if job.storage:  # the URL may hold a password: the environment carries it, the job file on disk does not
        env[STORAGE_ENV] = job.storage
    procs = []
    for worker in range(workers):
        path = job.folder / f"worker{worker}.json"
        path.write_text(json.dumps({**asdict(job), "storage": masked(job.storage), "worker": worker}))
        procs.append(subprocess.Popen([sys.executable, "-m", "pipeline.sweeps.study", str(path)], env=env))
    return sum(proc.wait() != 0 for proc in procs)


def main(path: str) -> None:
    job = SweepJob(**json.loads(Path(path).read_text()))
    if job.storage and os.environ.get(STORAGE_ENV):
        job.storage = os.environ[STORAGE_ENV]
    tag = f"[worker {job.worker}] " if job.worker else ""
    try:
        work(job, log=lambda line: print(tag + line, flush=True))
    except AsrpipeError as exc:
        print(f"{tag}error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m pipeline.sweeps.study JOB.json")
    main(sys.argv[1])
