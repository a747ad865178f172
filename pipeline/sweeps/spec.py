"""Sweep specs: the W&B sweep YAML students already write, and our staged search made of such sweeps. Torch-free.

A W&B sweep (the same file is accepted by `wandb sweep`):

    method: bayes                      # grid | random | bayes
    metric: {name: dev_acc, goal: maximize}
    parameters:                        # recipe keys, dotted as --set takes them
      train.lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-2}
      model.dropout: {values: [0.1, 0.25]}
      train.epochs: {value: 4}
    early_terminate: {type: hyperband, min_iter: 1, eta: 3}
    run_cap: 12

A staged search (seed 003; the tuning playbook's incremental strategy): each stage a W&B-style sweep run on quick
settings, starting from the winners of the stages before it; `lr_scaling: sqrt` rescales the LR by √C when a trial
changes the batch size by C (seed 003), `lr_neighbours` adds its 0.5× and 2× neighbours:

    config: seed003-demo               # the base recipe (--config overrides it)
    metric: {name: dev_lev, goal: minimize}
    stages:
      - name: padding
        quick: {train.epochs: 1, train.quick: 0.2}
        sweep: {method: grid, parameters: {train.padding: {values: [batch, fixed]}}}

Every key, distribution and recipe key is checked before anything runs: one line naming the file and the field.
"""
from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import AsrpipeError

SUPPORTED = ("constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform", "log_uniform_values",
             "q_log_uniform_values")
WANDB_ONLY = ("q_log_uniform", "inv_log_uniform", "inv_log_uniform_values", "normal", "q_normal", "log_normal",
              "q_log_normal", "beta", "q_beta")


class SpecError(AsrpipeError, ValueError):
    """A sweep spec that cannot run; one line naming the file and the field."""


class Parameter(BaseModel):
    """One W&B parameter entry. `sample(trial, name)` draws it from an Optuna trial."""
    model_config = ConfigDict(extra="forbid")

    value: Any = None
    values: list[Any] | None = None
    distribution: str | None = None
    min: int | float | None = None     # ints (as YAML writes them) make an int_uniform range, as in W&B
    max: int | float | None = None
    q: float | None = None

    @model_validator(mode="after")
    def _check(self) -> "Parameter":
        dist = self.kind
        if dist in WANDB_ONLY:
            raise ValueError(f"distribution {dist} is not supported by the Optuna backend (supported: "
                             f"{', '.join(SUPPORTED)}; --backend wandb runs it on W&B's servers)")
        if dist not in SUPPORTED:
            close = difflib.get_close_matches(str(dist), SUPPORTED + WANDB_ONLY, n=1)
            raise ValueError(f"unknown distribution {dist!r}" + (f" (did you mean {close[0]}?)" if close else ""))
        if dist == "categorical" and not self.values:
            raise ValueError("values must list at least one value")
        if dist not in ("constant", "categorical"):
            if self.min is None or self.max is None:
                raise ValueError(f"distribution {dist} needs min and max")
            if self.min > self.max:
                raise ValueError(f"min {self.min:g} is above max {self.max:g}")
            if dist == "log_uniform_values" or dist == "q_log_uniform_values":
                if self.min <= 0:
                    raise ValueError(f"distribution {dist} needs min > 0 (got {self.min:g})")
        return self

    @property
    def kind(self) -> str:
        """The W&B distribution, inferred as W&B does when the entry does not name one."""
        if self.distribution:
            return self.distribution
        if self.values is not None:
            return "categorical"
        if self.min is not None and self.max is not None:
            ints = isinstance(self.min, int) and isinstance(self.max, int)
            return "int_uniform" if ints else "uniform"
        return "constant"

    def samples(self) -> list[Any]:
        """Values to check the recipe with: every categorical value, both ends of a range."""
        kind = self.kind
        if kind == "constant":
            return [self.value]
        if kind == "categorical":
            return list(self.values)
        low, high = self.bounds()
        return [int(low), int(high)] if kind == "int_uniform" else [low, high]

    def bounds(self) -> tuple[float, float]:
        if self.kind == "log_uniform":  # W&B: min and max are natural-log exponents
            return math.exp(self.min), math.exp(self.max)
        return float(self.min), float(self.max)

    def sample(self, trial, name: str) -> Any:
        kind = self.kind
        if kind == "constant":
            return self.value
        if kind == "categorical":
            return trial.suggest_categorical(name, self.values)
        low, high = self.bounds()
        if kind == "int_uniform":
            return trial.suggest_int(name, int(low), int(high))
        if kind == "q_uniform":
            return trial.suggest_float(name, low, high, step=self.q or 1.0)
        value = trial.suggest_float(name, low, high, log=kind in ("log_uniform", "log_uniform_values",
                                                                   "q_log_uniform_values"))
        if kind == "q_log_uniform_values":  # Optuna has no log+step: round the draw to the grid of q
            return round(value / (self.q or 1.0)) * (self.q or 1.0)
        return float(f"{value:.4g}")  # 4 significant digits: readable keys, folder names and tables


class Metric(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    goal: Literal["minimize", "maximize"] | None = None
    target: float | None = None


class EarlyTerminate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["hyperband"]
    min_iter: int | None = Field(None, ge=1)
    max_iter: int | None = Field(None, ge=1)
    eta: float = Field(3, gt=1)
    s: int | None = None
    strict: bool | None = None


class Sweep(BaseModel):
    """A W&B sweep configuration (the keys `wandb sweep` knows)."""
    model_config = ConfigDict(extra="forbid")

    method: Literal["grid", "random", "bayes"]
    parameters: dict[str, Parameter]
    metric: Metric | None = None
    early_terminate: EarlyTerminate | None = None
    run_cap: int | None = Field(None, ge=1)
    name: str | None = None
    description: str | None = None
    program: str | None = None
    command: list[Any] | None = None
    project: str | None = None
    entity: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "Sweep":
        if not self.parameters:
            raise ValueError("parameters: at least one parameter")
        if self.method == "grid":
            ranged = [k for k, p in self.parameters.items() if p.kind not in ("constant", "categorical")]
            if ranged:
                raise ValueError(f"method grid needs values (or a value) for every parameter; {ranged[0]} is a "
                                 f"{self.parameters[ranged[0]].kind} range")
        return self

    def grid(self) -> dict[str, list]:
        """GridSampler's search space: the categorical parameters."""
        return {k: list(p.values) for k, p in self.parameters.items() if p.kind == "categorical"}

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values()) if self.method == "grid" else 0


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    quick: dict[str, Any] = Field(default_factory=dict)     # recipe overrides for this stage's quick trials
    sweep: Sweep
    lr_scaling: Literal["sqrt"] | None = None               # LR × √(batch size / the stage's reference batch size)
    lr_neighbours: bool = False                             # also try 0.5× and 2× that LR (seed 003)
    trials: int | None = Field(None, ge=1)                  # default: the grid's size, or run_cap


class Staged(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    config: str | None = None                               # the base recipe (name or path)
    metric: Metric | None = None
    stages: list[Stage]

    @model_validator(mode="after")
    def _check(self) -> "Staged":
        names = [s.name for s in self.stages]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"stages need distinct names (got {names})")
        return self


class Spec:
    """A loaded spec in one shape: a plain sweep is a staged search of one stage without quick settings."""

    def __init__(self, path: Path, staged: Staged, plain: bool, raw: dict):
        self.path, self.staged, self.plain, self.raw = path, staged, plain, raw

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def stages(self) -> list[Stage]:
        return self.staged.stages

    @property
    def config(self) -> str | None:
        return self.staged.config

    def metric(self) -> Metric:
        return self.staged.metric or self.stages[0].sweep.metric or Metric()


def spec_path(family: str, name: str) -> Path:
    """A named spec shipped with the recipes (pipeline/configs/<family>/sweeps/<name>.yaml) or a YAML path."""
    from pipeline.config import CONFIG_DIR

    given = Path(name)
    if given.suffix in (".yaml", ".yml") or given.exists():
        if not given.exists():
            raise SpecError(f"--spec {name}: no such file")
        return given
    path = CONFIG_DIR / family / "sweeps" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (CONFIG_DIR / family / "sweeps").glob("*.yaml"))
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(known) or 'none'}"
        raise SpecError(f"--spec {name}: no sweep spec named {name!r} for {family} ({hint})")
    return path


def load_spec(family: str, name: str) -> Spec:
    path = spec_path(family, name)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: not a readable YAML sweep spec ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping (a W&B sweep or `stages:`)")
    plain = "stages" not in raw
    try:
        if plain:
            sweep = Sweep.model_validate(raw)
            staged = Staged(metric=sweep.metric, stages=[Stage(name="sweep", sweep=sweep)])
        else:
            staged = Staged.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{path}: {_describe(exc)}") from None
    return Spec(path, staged, plain, raw)


def _describe(exc: ValidationError) -> str:
    error = exc.errors()[0]
    loc = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    return f"{loc}: {message}" if loc else message


def check_against_recipe(spec: Spec, family: str, config: str, sets: list[str], task_metric: str,
                         direction: str) -> None:
    """Every parameter and quick key is a recipe key taking the values the spec gives it; the metric is the
    family's dev metric in its direction. Nothing runs before this passes."""
    from pipeline.config import ConfigError, load_recipe

    metric = spec.metric()
    if metric.name and metric.name.replace("/", "_") != task_metric:
        raise SpecError(f"{spec.path}: metric.name {metric.name!r}: this family's dev metric is {task_metric!r}")
    goal = {"min": "minimize", "max": "maximize"}[direction]
    if metric.goal and metric.goal != goal:
        raise SpecError(f"{spec.path}: metric.goal {metric.goal}: {task_metric} is better when lower/higher "
                        f"({goal})")
    for stage in spec.stages:
        where = "parameters" if spec.plain else f"stages.{stage.name}.sweep.parameters"
        entries = [(f"stages.{stage.name}.quick", k, [v]) for k, v in stage.quick.items()]
        entries += [(where, k, p.samples()) for k, p in stage.sweep.parameters.items()]
        for field, key, values in entries:
            for value in values:
                try:
                    load_recipe(family, config, (*sets, override(key, value)))
                except ConfigError as exc:
                    raise SpecError(f"{spec.path}: {field}: {str(exc).split(': ', 1)[-1]}") from None
        if stage.lr_scaling and "train.batch_size" not in stage.sweep.parameters:
            raise SpecError(f"{spec.path}: stages.{stage.name}.lr_scaling: the stage does not sweep train.batch_size")


def override(key: str, value: Any) -> str:
    """A --set assignment for a value (JSON is YAML, so lists and strings survive the round trip)."""
    return f"{key}={json.dumps(value)}"
