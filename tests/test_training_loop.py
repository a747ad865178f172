"""The one training loop, for every family: exact resume, early stopping, the wall-clock budget, the epoch callback,
every optimizer, and the records a stopped run leaves (metrics.json, last.pt, the train manifest)."""
from __future__ import annotations

import json

import numpy as np

import pytest
import torch

from pipeline.config import load_recipe
from pipeline.engine import Pipeline
from pipeline.tasks import stages_for
from pipeline.training import loop
from pipeline.training.launch import make
from tests.kaggle_replica import make_replica

FAMILIES = {"hw1p2": "demo-hw1p2", "hw3p2": "demo-hw3p2", "hw4p2": "demo-hw4p2"}
KIND = {"hw1p2": "frames", "hw3p2": "ctc", "hw4p2": "seq2seq"}


@pytest.fixture(scope="module", params=list(FAMILIES))
def normalized(request, tmp_path_factory):
    """A tiny replica of the family's demo competition, normalized; the train params of its `tiny` recipe."""
    torch.set_num_threads(1)
    family, tmp = request.param, tmp_path_factory.mktemp(request.param)
    profile = make_replica(tmp / "competition", FAMILIES[family], n_train=8, n_dev=3, n_test=2)
    pipeline = Pipeline(profile, load_recipe(family, "tiny"), stages_for(family), artifacts_root=tmp / "artifacts",
                        submissions_root=tmp / "submissions", options={"wandb": "off", "progress": False},
                        config_name="tiny")
    pipeline.run(stop="normalize")
    return family, pipeline.plan["train"].params, str(pipeline.plan["normalize"].dir), list(profile.symbols)


def task_for(normalized, **train):
    family, params, directory, symbols = normalized
    params = {**params, "train": {**params["train"], **train}}
    return make(f"pipeline.training.{KIND[family]}:make_task",
                {"params": params, "normalized": directory, "symbols": symbols})


def fit(task, out, **kwargs):
    return loop.train(task, out, tracking="off", run_name="t", progress=False, **kwargs)


def history(out) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in json.loads((out / "history.json").read_text())]


def test_a_paused_run_resumes_to_the_same_result(normalized, tmp_path):
    whole = fit(task_for(normalized, epochs=3), tmp_path / "whole")
    paused = fit(task_for(normalized, epochs=3), tmp_path / "split", stop_after_epoch=1)
    assert paused["stop_reason"] == "paused" and paused["epochs"] == 1
    resumed = fit(task_for(normalized, epochs=3), tmp_path / "split")
    assert resumed["stop_reason"] == whole["stop_reason"] == "completed"
    assert history(tmp_path / "split") == history(tmp_path / "whole")
    metric = task_for(normalized).metric
    assert resumed[f"best_{metric}"] == whole[f"best_{metric}"]
    a, b = (torch.load(d / "checkpoints" / "last.pt", weights_only=False) for d in (tmp_path / "whole", tmp_path / "split"))
    assert a["schedule"] == b["schedule"] and a["task_state"] == b["task_state"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_the_epoch_callback_stops_the_run_and_the_records_say_so(normalized, tmp_path):
    seen = []

    def prune(row):
        seen.append(row)
        return "pruned by test" if row["epoch"] == 2 else None

    task = task_for(normalized, epochs=4)
    metrics = fit(task, tmp_path, on_epoch=prune)
    assert [r["epoch"] for r in seen] == [1, 2] and task.metric in seen[0]
    assert metrics["stop_reason"] == "callback: pruned by test"
    assert metrics["epochs"] == 2 and metrics["epochs_planned"] == 4
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    # stopped from outside (a sweep's pruner), it goes on when run again, to the same end as a straight run
    resumed = fit(task_for(normalized, epochs=4), tmp_path)
    assert resumed["epochs"] == 4 and resumed["stop_reason"] == "completed"
    fit(task_for(normalized, epochs=4), tmp_path / "straight")
    assert history(tmp_path) == history(tmp_path / "straight")


def test_the_time_budget_stops_after_the_epoch_that_crosses_it(normalized, tmp_path):
    metrics = fit(task_for(normalized, epochs=3, max_minutes=1e-6), tmp_path)
    assert metrics["stop_reason"] == "max_minutes" and metrics["epochs"] == 1
    assert [r["epoch"] for r in history(tmp_path)] == [1]


def test_early_stopping_follows_the_metric_direction(normalized):
    task = task_for(normalized)
    worse = -1 if task.direction == "max" else 1
    values = [10.0, 10.0 + worse, 10.0 + 2 * worse]  # never better than the first evaluation
    assert loop.patience_exhausted(values, 2, task.direction)
    assert not loop.patience_exhausted(values, 3, task.direction)
    assert not loop.patience_exhausted([10.0, 10.0 - worse, 10.0 - 2 * worse], 1, task.direction)  # improving


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "adamax", "adagrad", "sgd"])
def test_every_optimizer_trains(normalized, tmp_path, optimizer):
    extra = {"nesterov": True} if optimizer == "sgd" else {}
    metrics = fit(task_for(normalized, epochs=1, optimizer=optimizer, **extra), tmp_path)
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert metrics["stop_reason"] == "completed" and last["optimizer"]["state"]  # it stepped
    assert metrics["device"] == "cpu" and metrics["amp"] is None  # AMP is CUDA only


def test_patience_and_wandb_rows():
    assert loop.patience_exhausted([3.0, 2.0, 2.5, 2.1], 2, "min")
    assert not loop.patience_exhausted([3.0, 2.0, 2.5, 1.9], 2, "min")
    assert loop.patience_exhausted([50.0, 60.0, 59.0, 60.0], 2, "max")
    assert not loop.patience_exhausted([50.0, 60.0, 59.0], None, "max")
    row = {"epoch": 3, "train_loss": 1.0, "train_acc": 50.0, "dev_loss": 2.0, "dev_lev": 3.5, "tf_rate": 0.9,
           "lr": 1e-3, "seconds": 4.0}
    assert loop.wandb_row(row) == {"train/loss": 1.0, "train/acc": 50.0, "dev/loss": 2.0, "dev/lev": 3.5,
                                   "tf_rate": 0.9, "lr": 1e-3, "epoch_seconds": 4.0}


def test_early_stopping_ends_a_run_whose_dev_metric_stalls(normalized, tmp_path):
    task = task_for(normalized, epochs=5, early_stopping=2)
    task.evaluate = lambda model, rt, epoch, out_dir: {"dev_loss": 1.0, task.metric: 7.0}  # never better
    metrics = fit(task, tmp_path)
    assert metrics["stop_reason"] == "early_stopping" and metrics["epochs"] == 3
    assert metrics["best_epoch"] == 1  # ties keep the earlier epoch


def test_the_epoch_a_run_stops_after_is_evaluated(normalized, tmp_path):
    task = task_for(normalized, epochs=4, eval_every=3, max_minutes=1e-6)
    metrics = fit(task, tmp_path)
    assert metrics["stop_reason"] == "max_minutes" and history(tmp_path)[0][task.metric] is not None
    paused = fit(task_for(normalized, epochs=4, eval_every=3), tmp_path / "paused", stop_after_epoch=1)
    assert paused["stop_reason"] == "paused" and history(tmp_path / "paused")[0][task.metric] is not None


def test_resuming_with_another_number_of_processes_is_refused(normalized, tmp_path):
    fit(task_for(normalized, epochs=2), tmp_path, stop_after_epoch=1)
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert last["world_size"] == 1
    torch.save({**last, "world_size": 2}, tmp_path / "checkpoints" / "last.pt")
    with pytest.raises(loop.TrainingError, match="trained with 2 process.*--nproc 2"):
        fit(task_for(normalized, epochs=2), tmp_path)


def test_plateau_judges_the_first_evaluation_after_warmup():
    from pipeline.tasks.train_recipe import SchedulerConfig
    from pipeline.training.optim import Schedule

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    schedule = Schedule(SchedulerConfig(name="plateau", warmup_epochs=1, warmup_start_factor=0.5, patience=0,
                                        factor=0.5), optimizer, steps_per_epoch=2, total_steps=10, mode="min")
    lrs = []
    for _ in range(4):
        for _ in range(2):
            optimizer.step()
            schedule.step_batch()
        schedule.step_epoch(1.0)  # flat: every evaluation after the first is "no better"
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == [1.0, 0.5, 0.25, 0.125]


def test_a_batch_schedule_switches_sizes_scales_the_lr_and_resumes_across_the_switch(normalized, tmp_path):
    family = normalized[0]
    base_task = task_for(normalized)
    if family == "hw4p2":  # its batches grow to frame and token budgets: the recipe refuses a count schedule
        with pytest.raises(Exception, match="batch_schedule is for hw1p2/hw3p2"):
            task_for(normalized, batch_schedule=[[0, 4]])
        return
    base = base_task.cfg.batch_size
    small = max(1, base // 4)
    train = dict(epochs=3, lr=1e-3, scheduler={"name": "none"}, batch_schedule=[[0, small], [2, base]])
    task = task_for(normalized, **train)
    assert [task.cfg.batch_size_at(e, base) for e in (1, 2, 3)] == [small, small, base]
    first, third = task.plan(1), task.plan(3)
    assert max(len(b) for b in first) == small and max(len(b) for b in third) <= base
    assert task.steps(1, 1) == len(first) > len(third) == task.steps(3, 1)

    fit(task, tmp_path / "whole")
    lrs = [row["lr"] for row in history(tmp_path / "whole")]
    assert lrs == pytest.approx([1e-3 * (small / base) ** 0.5] * 2 + [1e-3])
    assert fit(task_for(normalized, **train), tmp_path / "split", stop_after_epoch=2)["stop_reason"] == "paused"
    fit(task_for(normalized, **train), tmp_path / "split")
    assert history(tmp_path / "split") == history(tmp_path / "whole")

    unscaled = fit(task_for(normalized, **train, batch_lr_scaling="none"), tmp_path / "unscaled")
    assert unscaled["epochs"] == 3 and {r["lr"] for r in history(tmp_path / "unscaled")} == {1e-3}


def test_a_quick_run_trains_on_the_same_fixed_share_every_epoch(normalized, tmp_path):
    family = normalized[0]
    task, again = task_for(normalized, quick=0.5), task_for(normalized, quick=0.5)
    if family == "hw1p2":
        store = task.train_windows.store
        seen = [set(np.concatenate(task.plan(e)).tolist()) for e in (1, 2)]
        utterances = {int(np.searchsorted(store.offsets, f, side="right") - 1) for f in seen[0]}
        assert seen[0] == seen[1] == set(again.train_windows.order(1, again.cfg.seed, among=again.among).tolist())
    else:
        store = task.train_store
        seen = [set(i for b in task.plan(e) for i in b) for e in (1, 2)]
        utterances = seen[0]
        assert seen[0] == seen[1] == set(i for b in again.plan(1) for i in b)
    assert len(utterances) == round(len(store) * 0.5)
    metrics = fit(task_for(normalized, quick=0.5, epochs=1), tmp_path)
    assert metrics["quick"] == 0.5 and metrics["epochs"] == 1


def test_warmup_counts_the_steps_of_the_first_epochs_and_cosine_ends_at_min_lr():
    from pipeline.tasks.train_recipe import SchedulerConfig
    from pipeline.training.optim import Schedule, warmup_steps

    assert warmup_steps(1, [40, 40, 10]) == 40 and warmup_steps(1.5, [40, 10, 10]) == 45 and warmup_steps(0.5, 30) == 15
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    schedule = Schedule(SchedulerConfig(name="cosine", warmup_epochs=1, min_lr=1e-4), optimizer, [8, 2, 2], 12)
    assert schedule.warmup_steps == 8
    lrs = []
    for _ in range(12):
        optimizer.step()
        schedule.step_batch()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert max(lrs) == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4)  # the floor is min_lr, not lower
