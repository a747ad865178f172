"""Three tiny stages (a → b → c) for exercising the engine without torch or data."""
from __future__ import annotations

import os
import time
from pathlib import Path

from pipeline.engine import Pipeline, Stage, StageRun
from pipeline.tasks.profiles import PROFILES

CALLS: list[str] = []


def make_stage(name: str, upstream: tuple[str, ...], module: str | None = None, resumable: bool = False) -> Stage:
    """`module`: pretend run() is defined there, so that module's import closure is the stage's code."""
    def params(profile, recipe):
        return dict(recipe.get(name, {}))

    def label(params):
        return name + "".join(f"-{k}{v}" for k, v in sorted(params.items()))

    def run(run: StageRun) -> dict:
        CALLS.append(name)
        previous = [(run.inputs[u].dir / "out.txt").read_text() for u in upstream]
        partial = run.out / "partial.txt"
        resumed = partial.exists()
        partial.write_text("started")
        if run.options.get("sleep_in") == name:
            Path(run.options["started_flag"]).write_text("x")
            time.sleep(60)
        if run.options.get("fail_in") == name:
            raise RuntimeError("boom")
        (run.out / "out.txt").write_text("|".join(previous + [name, str(run.params)]))
        return {"resumed": resumed, "pid": os.getpid()}

    if module:
        run.__module__ = module
    return Stage(name=name, upstream=upstream, params=params, label=label, run=run, resumable=resumable)


def toy_pipeline(root: Path, recipe: dict, options: dict | None = None, module_b: str | None = None,
                 resumable_b: bool = False) -> Pipeline:
    stages = [make_stage("a", ()), make_stage("b", ("a",), module_b, resumable_b), make_stage("c", ("b",))]
    return Pipeline(PROFILES["demo-hw3p2"], recipe, stages, artifacts_root=root / "artifacts",
                    submissions_root=root / "submissions", options=options or {})


if __name__ == "__main__":  # used by the kill test: run the toy pipeline, sleeping inside stage b
    import json
    import sys

    root, options = Path(sys.argv[1]), json.loads(sys.argv[2])
    toy_pipeline(root, {"a": {"x": 1}, "b": {"y": 1}}, options).run()
