"""`asrpipe sweep`: spec checking (one line, nothing run), the W&B distributions on Optuna, the W&B agent command,
and real sweeps on demo-hw3p2 with the `tiny` recipe: two worker processes on one journal file, a staged search
carrying a winner into the next stage, pruning, a SIGKILLed worker on an sqlite RDB with heartbeats, and two
"machines" (separate artifact roots) on a real PostgreSQL server."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from glob import glob
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from pipeline.sweeps.report import trial_rows, write_best, write_plots
from pipeline.sweeps.spec import Parameter, SpecError, load_spec
from pipeline.sweeps.study import STORAGE_ENV, SweepJob, masked, open_study, prepare, storage_for, work
from pipeline.sweeps.wandb_backend import agent_command, agent_sets, run_agent, sweep_config

REPO = Path(__file__).resolve().parent.parent
TASK = "demo-hw3p2"


def write_spec(tmp_path: Path, spec: dict, name: str = "spec") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def job_for(tmp_path: Path, spec: dict, artifacts: Path | None = None, name: str = "spec", **options) -> SweepJob:
    return prepare(TASK, write_spec(tmp_path, spec, name), None, "tiny", [], artifacts or tmp_path / "artifacts",
                   tmp_path / "submissions", wandb="off", **options)


def studies(job: SweepJob) -> dict:
    storage = storage_for(job)
    return {s: optuna.load_study(study_name=job.study_name(s), storage=storage) for s in job.stages}


# ---- specs ----------------------------------------------------------------------------------------------------------

GOOD = {"method": "random", "metric": {"name": "dev_lev", "goal": "minimize"},
        "parameters": {"train.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}}}


@pytest.mark.parametrize("change, message", [
    ({"methd": "grid"}, "methd: unknown key"),
    ({"parameters": {"train.lrr": {"values": [1e-3]}}}, "parameters: train.lrr: unknown key (did you mean train.lr?)"),
    ({"parameters": {"model.embed": {"values": ["resnet", "transformer"]}}}, "parameters: model.embed: "),
    ({"parameters": {"train.lr": {"distribution": "normal", "mu": 0, "sigma": 1}}}, "parameters.train.lr"),
    ({"parameters": {"train.lr": {"distribution": "normal", "min": 0, "max": 1}}},
     "distribution normal is not supported by the Optuna backend"),
    ({"parameters": {"train.lr": {"distribution": "log_unifrom_values", "min": 1e-4, "max": 1e-2}}},
     "unknown distribution 'log_unifrom_values' (did you mean log_uniform_values?)"),
    ({"parameters": {"train.lr": {"min": 0.1, "max": 0.01}}}, "min 0.1 is above max 0.01"),
    ({"method": "grid"}, "method grid needs values (or a value) for every parameter; train.lr is a"),
    ({"metric": {"name": "dev_lev", "goal": "maximize"}}, "metric.goal maximize: dev_lev is better when"),
    ({"metric": {"name": "val_acc"}}, "metric.name 'val_acc': this family's dev metric is 'dev_lev'"),
])
def test_a_bad_spec_is_one_line_and_runs_nothing(tmp_path, change, message):
    spec = {**GOOD, **change}
    with pytest.raises(SpecError) as err:
        job_for(tmp_path, spec)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(tmp_path / "spec.yaml") in str(err.value)
    assert not (tmp_path / "artifacts").exists()


def test_a_bad_staged_spec_and_a_bad_name_are_one_line(tmp_path):
    staged = {"stages": [{"name": "a", "quick": {"train.epoch": 1}, "sweep": {"method": "grid", "parameters": {
        "train.batch_size": {"values": [4, 8]}}}}]}
    with pytest.raises(SpecError, match=r"stages.a.quick: train.epoch: unknown key \(did you mean train.epochs\?\)"):
        job_for(tmp_path, staged)
    twice = {"stages": [{"name": "a", "sweep": GOOD}, {"name": "a", "sweep": GOOD}]}
    with pytest.raises(SpecError, match="stages need distinct names"):
        job_for(tmp_path, twice)
    scaled = {"stages": [{"name": "a", "lr_scaling": "sqrt", "sweep": GOOD}]}
    with pytest.raises(SpecError, match="lr_scaling: the stage does not sweep train.batch_size"):
        job_for(tmp_path, scaled)
    done = subprocess.run([sys.executable, "-m", "cli.main", "sweep", "run", "--task", TASK, "--spec", "seed003-stagd",
                           "--artifacts", str(tmp_path / "a")], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "did you mean seed003-staged?" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("family, name", [("hw1p2", "seed000"), ("hw1p2", "seed000-demo"),
                                          ("hw3p2", "seed003-staged"), ("hw3p2", "seed003-staged-demo")])
def test_the_named_specs_check_against_their_recipes(tmp_path, family, name):
    task = {"hw1p2": "demo-hw1p2", "hw3p2": "demo-hw3p2"}[family]
    job = prepare(task, name, None, None, [], tmp_path / "a", tmp_path / "s")
    assert job.stages and json.loads((job.folder / "sweep.json").read_text())["spec"].endswith(f"{name}.yaml")


def test_wandb_distributions_translate_to_optuna():
    study = optuna.create_study()
    trial = study.ask()
    log = Parameter(distribution="log_uniform", min=math.log(1e-4), max=math.log(1e-2))  # W&B: exponents
    assert 1e-4 <= log.sample(trial, "a") <= 1e-2
    assert Parameter(min=2, max=5).kind == "int_uniform" and isinstance(Parameter(min=2, max=5).sample(trial, "b"), int)
    assert Parameter(min=0.0, max=0.5).kind == Parameter(min=0.0, max=1.0).kind == "uniform"
    q = Parameter(distribution="q_uniform", min=0, max=1, q=0.25).sample(trial, "c")
    assert q in (0.0, 0.25, 0.5, 0.75, 1.0)
    ql = Parameter(distribution="q_log_uniform_values", min=8, max=256, q=8).sample(trial, "d")
    assert ql % 8 == 0 and 8 <= ql <= 256
    assert Parameter(value=3).sample(trial, "e") == 3 and "e" not in trial.params


# ---- the W&B backend ------------------------------------------------------------------------------------------------

def test_the_wandb_agent_command_round_trips_through_wandbs_own_macros(tmp_path, monkeypatch):
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    job = job_for(tmp_path, {**GOOD, "parameters": {**GOOD["parameters"], "train.specaugment.time_mask": {
        "values": [4, 8]}}})
    config = sweep_config(job)
    assert config["metric"] == {"name": "dev/lev", "goal": "minimize"}  # what the training loop logs
    assert config["parameters"] == GOOD["parameters"] | {"train.specaugment.time_mask": {"values": [4, 8]}}
    command = agent_command(job)
    assert command[0] == "${env}" and command[-1] == "${args_no_equals}"
    assert command[command.index("--task") + 1] == TASK and command[command.index("--config") + 1] == "tiny"
    values = {"train.lr": 0.00123, "train.specaugment.time_mask": 8}
    args = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    assert agent_sets(args["args_no_equals"]) == ["train.lr=0.00123", "train.specaugment.time_mask=8"]
    assert agent_sets(args["args"]) == ["train.lr=0.00123", "train.specaugment.time_mask=8"]
    with pytest.raises(ValueError, match="has no value"):
        agent_sets(["--train.lr"])
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    job.wandb = "auto"
    with pytest.raises(Exception, match="needs W&B online .* the default --backend optuna runs the same spec"):
        run_agent(job, count=2)


# ---- real sweeps ----------------------------------------------------------------------------------------------------

RANDOM_LR = {"method": "random", "metric": {"name": "dev_lev", "goal": "minimize"},
             "parameters": {"train.lr": {"values": [4e-3, 2e-3, 1e-3, 3e-3]}, "train.epochs": {"value": 2},
                            "train.quick": {"value": 0.25}}}


def worker(job: SweepJob, number: int) -> subprocess.Popen:
    """A worker process as `sweep run --workers N` starts it: the job file, the storage URL in the environment."""
    path = job.folder / f"test-worker{number}.json"
    path.write_text(json.dumps({**asdict(job), "storage": masked(job.storage), "worker": number}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", **({STORAGE_ENV: job.storage} if job.storage else {})}
    return subprocess.Popen([sys.executable, "-m", "pipeline.sweeps.study", str(path)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_workers_share_one_journal_and_trials_are_ordinary_cached_runs(tmp_path):
    job = job_for(tmp_path, RANDOM_LR, trials=4)
    procs = [worker(job, n) for n in (0, 1)]
    assert all(p.wait(timeout=600) == 0 for p in procs), [p.stderr.read() for p in procs]
    study = studies(job)["sweep"]
    done = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert 4 <= len(done) <= 5  # MaxTrialsCallback: a worker may finish one more than asked while the other ends
    assert len({t.user_attrs["worker"] for t in done}) == 2
    # two trials that draw the same LR share one run folder (the cached train stage): a pruned trial leaves it
    # incomplete, and another trial with that LR resumes and completes it
    completed = {t.user_attrs["train_dir"] for t in done if t.state == TrialState.COMPLETE}
    for trial in done:
        train_dir = Path(trial.user_attrs["train_dir"])
        assert train_dir.parent == tmp_path / "artifacts" / TASK / "train" and "quick0.25" in train_dir.name
        assert (train_dir / ".done").exists() == (trial.user_attrs["train_dir"] in completed)
    # a repeated configuration costs nothing: the same value, from the cached train stage
    again = job_for(tmp_path, {**RANDOM_LR, "parameters": {**RANDOM_LR["parameters"], "train.lr": {"values": [
        done[0].user_attrs["applied"]["train.lr"]]}}}, name="again", trials=1)
    started = time.time()
    work(again, log=lambda line: None)
    again_trial = studies(again)["sweep"].trials[0]
    assert again_trial.user_attrs["train_dir"] == done[0].user_attrs["train_dir"]
    if done[0].state == TrialState.COMPLETE:
        assert again_trial.value == done[0].value and time.time() - started < 30


@pytest.mark.slow
def test_a_staged_search_carries_each_winner_into_the_next_stage(tmp_path):
    spec = {"config": "tiny", "metric": {"name": "dev_lev", "goal": "minimize"}, "stages": [
        {"name": "lr", "quick": {"train.epochs": 1, "train.quick": 0.25},
         "sweep": {"method": "grid", "parameters": {"train.lr": {"values": [8e-3, 1e-7]}}}},
        {"name": "batch", "quick": {"train.epochs": 1, "train.quick": 0.25}, "lr_scaling": "sqrt",
         "sweep": {"method": "grid", "parameters": {"train.batch_size": {"values": [2, 8]}}}},
    ]}
    job = job_for(tmp_path, spec)
    lines = []
    winners = work(job, log=lines.append)
    assert winners["lr"]["applied"] == {"train.lr": 8e-3}
    stage2 = studies(job)["batch"]
    assert stage2.user_attrs["fixed"] == {"train.lr": 8e-3}
    for trial in stage2.trials:
        applied = trial.user_attrs["applied"]
        assert applied["train.lr"] == pytest.approx(8e-3 * math.sqrt(applied["train.batch_size"] / 8), rel=1e-3)
        lrs = [o for o in trial.user_attrs["overrides"] if o.startswith("train.lr=")]
        assert lrs == [f"train.lr={applied['train.lr']}"]  # the scaled LR replaces the one stage 1 fixed
    assert any("winner: trial" in line and "[lr]" in line for line in lines)
    best, last = write_best(job)
    recipe = yaml.safe_load(best.read_text())
    assert recipe["train"]["lr"] == pytest.approx(last["applied"]["train.lr"])
    assert recipe["train"]["quick"] is None and recipe["train"]["epochs"] == 1  # tiny's: the stages' quick keys go
    assert best.read_text().startswith(f"# asrpipe sweep {job.name}")
    rows = trial_rows(job)
    assert list(rows["stage"]) == ["lr", "lr", "batch", "batch"]
    pngs = write_plots(job)
    assert {p.name for p in pngs} >= {"lr-history.png", "batch-history.png", "lr-parallel.png"}
    assert all(p.stat().st_size > 5_000 for p in pngs)


@pytest.mark.slow
def test_pruning_stops_a_bad_trial_early_and_leaves_its_folder_incomplete(tmp_path):
    from pipeline.runs import collect

    spec = {"method": "random", "metric": {"name": "dev_lev", "goal": "minimize"},
            "parameters": {"train.lr": {"values": [8e-3, 1e-7]}, "train.epochs": {"value": 3},
                           "train.quick": {"value": 0.25}}}
    job = job_for(tmp_path, spec, trials=4)
    study = open_study(job, load_spec("hw3p2", job.spec).stages[0], storage_for(job), epochs=3)
    for lr in (8e-3, 8e-3, 8e-3, 1e-7):  # three good runs (one trained, two cached), then a bad one
        study.enqueue_trial({"train.lr": lr})
    work(job, log=lambda line: None)
    trials = studies(job)["sweep"].trials
    assert [t.state for t in trials[:3]] == [TrialState.COMPLETE] * 3
    bad = trials[3]
    assert bad.state == TrialState.PRUNED and bad.user_attrs["epochs"] < 3
    assert bad.user_attrs["stop_reason"] == "callback: pruned by the sweep"
    folder = Path(bad.user_attrs["train_dir"])
    assert not (folder / ".done").exists() and (folder / "checkpoints" / "last.pt").exists()
    assert {r["dir"]: r["state"] for r in collect(tmp_path / "artifacts", TASK)}[str(folder)] == "pruned"


@pytest.mark.slow
def test_a_killed_worker_on_an_rdb_is_failed_by_heartbeat_and_its_trial_retried(tmp_path):
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    spec = {**RANDOM_LR, "parameters": {**RANDOM_LR["parameters"], "train.epochs": {"value": 3}}}
    job = job_for(tmp_path, spec, storage=url, heartbeat=1, trials=3)
    first = worker(job, 0)
    deadline = time.time() + 300
    running = []
    while time.time() < deadline and first.poll() is None:
        try:
            running = [t for t in studies(job)["sweep"].get_trials(states=(TrialState.RUNNING,))
                       if (Path(t.user_attrs.get("train_dir", "/nonexistent")) / "history.json").exists()]
        except KeyError:
            running = []
        if running:
            break
        time.sleep(0.3)
    assert running, "the worker never got a trial past its first epoch"
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_dir = Path(running[0].user_attrs["train_dir"])
    assert not (killed_dir / ".done").exists()

    work(job, log=lambda line: None)
    trials = studies(job)["sweep"].get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [running[0].number]
    assert len([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) >= 3
    retried = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == running[0].number]
    assert retried and retried[0].user_attrs["train_dir"] == str(killed_dir)
    for folder in (tmp_path / "artifacts" / TASK / "train").iterdir():
        if (folder / ".done").exists():  # complete means every planned epoch is in its history
            history = json.loads((folder / "history.json").read_text())
            assert [r["epoch"] for r in history] == [1, 2, 3]


# ---- PostgreSQL ---------------------------------------------------------------------------------------------------

def pg_bin(name: str) -> str | None:
    found = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@pytest.fixture
def postgres(tmp_path):
    """A real PostgreSQL server in a temp dir, run by an unprivileged user (initdb refuses root)."""
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries missing: `make test` installs Debian's postgresql")
        pytest.skip("PostgreSQL server binaries not installed (make test installs them)")
    root = Path(tempfile.mkdtemp(prefix="asrpipe-pg-"))  # not under pytest's tmp root: that one is root-only (0700)
    prefix = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    subprocess.run([*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True)
    subprocess.run([*prefix, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_machines_join_one_study_on_a_real_postgresql_server(tmp_path, postgres):
    jobs = [job_for(tmp_path, RANDOM_LR, artifacts=tmp_path / f"machine{n}", storage=postgres, trials=4)
            for n in (0, 1)]
    procs = [worker(job, n) for n, job in enumerate(jobs)]
    assert all(p.wait(timeout=600) == 0 for p in procs), [p.stderr.read() for p in procs]
    study = optuna.load_study(study_name=jobs[0].name, storage=postgres)
    done = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert 4 <= len(done) <= 5
    roots = {Path(t.user_attrs["train_dir"]).parents[2].name for t in done}
    assert roots == {"machine0", "machine1"}
    saved = json.loads((jobs[0].folder / "sweep.json").read_text())["storage"]
    assert saved == postgres  # no password in this URL; one with a password is masked:
    assert masked("postgresql://ann:s3cret@db.example:5432/sweeps") == "postgresql://ann:***@db.example:5432/sweeps"


def test_a_trial_logs_to_wandb_offline_grouped_by_the_sweep_name(tmp_path, monkeypatch):
    from tests.test_ctc_family import wandb_records

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    spec = {**RANDOM_LR, "parameters": {"train.lr": {"values": [4e-3]}, "train.epochs": {"value": 1},
                                        "train.quick": {"value": 0.1}}}
    job = job_for(tmp_path, spec, name="grouped", trials=1)
    job.wandb = "offline"
    work(job, log=lambda line: None)
    trial = studies(job)["sweep"].trials[0]
    runs = list(Path(trial.user_attrs["train_dir"]).glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    deadline = time.time() + 30
    while True:
        groups = [r.run.run_group for r in wandb_records(runs[0]) if r.WhichOneof("record_type") == "run"]
        if groups or time.time() > deadline:
            break
        time.sleep(0.2)
    assert groups and set(groups) == {"grouped"}


def test_a_worker_stops_after_three_failed_trials_in_a_row():
    from pipeline.errors import AsrpipeError
    from pipeline.sweeps.study import StopAfterFailures

    def broken(trial):
        raise AsrpipeError("no data")

    study = optuna.create_study()
    lines = []
    study.optimize(broken, n_trials=20, catch=(AsrpipeError,), callbacks=[StopAfterFailures(log=lines.append)])
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3 and "3 trials failed in a row" in lines[0]
