"""Stage engine semantics: keys, freshness, staleness reasons, ranges, force, interrupted and killed stages."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import engine
from pipeline.engine import DONE, EngineError
from tests.toy_stages import CALLS, toy_pipeline

RECIPE = {"a": {"x": 1}, "b": {"y": 1}, "c": {"z": 1}}


@pytest.fixture(autouse=True)
def clear_calls():
    CALLS.clear()
    engine.clear_code_caches()
    yield


def states(pipeline) -> dict[str, str]:
    return {line.stage: line.state for line in pipeline.status()}


def test_first_run_runs_everything_and_second_is_a_no_op(tmp_path):
    toy_pipeline(tmp_path, RECIPE).run()
    assert CALLS == ["a", "b", "c"]
    again = toy_pipeline(tmp_path, RECIPE)
    assert states(again) == {"a": "fresh", "b": "fresh", "c": "fresh"}
    again.run()
    assert CALLS == ["a", "b", "c"]


def test_output_dir_is_readable_params_plus_key_prefix(tmp_path):
    pipeline = toy_pipeline(tmp_path, RECIPE)
    pipeline.run()
    planned = pipeline.plan["b"]
    assert planned.dir == tmp_path / "artifacts" / "demo-hw3p2" / "b" / f"b-y1-{planned.key[:8]}"
    assert json.loads((planned.dir / DONE).read_text())["key"] == planned.key


def test_param_change_makes_the_stage_and_downstream_stale_with_reasons(tmp_path):
    toy_pipeline(tmp_path, RECIPE).run()
    changed = toy_pipeline(tmp_path, {**RECIPE, "b": {"y": 2}})
    lines = {line.stage: line for line in changed.status()}
    assert lines["a"].state == "fresh"
    assert lines["b"].state == "stale" and "param y: 1 → 2" in lines["b"].reason
    assert lines["c"].state == "stale" and "upstream b changed" in lines["c"].reason
    CALLS.clear()
    changed.run()
    assert CALLS == ["b", "c"]
    # the old output stays next to the new one: changing back is fresh again
    assert states(toy_pipeline(tmp_path, RECIPE)) == {"a": "fresh", "b": "fresh", "c": "fresh"}


def test_code_change_makes_the_stage_stale(tmp_path, monkeypatch):
    module = tmp_path / "mods" / "toy_code_b.py"
    module.parent.mkdir()
    module.write_text("def f():\n    return 1\n")
    monkeypatch.syspath_prepend(str(module.parent))
    toy_pipeline(tmp_path, RECIPE, module_b="toy_code_b").run()
    module.write_text("# a comment does not count\ndef f():\n    return 1  # nor does this\n")
    engine._code_cache.clear()
    assert states(toy_pipeline(tmp_path, RECIPE, module_b="toy_code_b"))["b"] == "fresh"
    module.write_text("def f():\n    return 2\n")
    engine._code_cache.clear()
    lines = {line.stage: line for line in toy_pipeline(tmp_path, RECIPE, module_b="toy_code_b").status()}
    assert lines["b"].state == "stale" and "code of toy_code_b changed" in lines["b"].reason
    assert lines["c"].state == "stale"


def test_missing_when_never_run(tmp_path):
    lines = toy_pipeline(tmp_path, RECIPE).status()
    assert [line.state for line in lines] == ["missing"] * 3
    assert "never run" in lines[0].reason


def test_ranges_and_only(tmp_path):
    pipeline = toy_pipeline(tmp_path, RECIPE)
    with pytest.raises(EngineError, match="stage a has no fresh output"):
        pipeline.run(only="b")
    pipeline.run(stop="b")
    assert CALLS == ["a", "b"]
    pipeline.run(start="c")
    assert CALLS == ["a", "b", "c"]
    pipeline.run(start="b", stop="c", force=True)
    assert CALLS == ["a", "b", "c", "b", "c"]
    with pytest.raises(EngineError, match="unknown stage"):
        pipeline.run(only="nope")
    with pytest.raises(EngineError, match="comes after"):
        pipeline.run(start="c", stop="a")


def test_forced_upstream_makes_downstream_stale(tmp_path):
    toy_pipeline(tmp_path, RECIPE).run()
    pipeline = toy_pipeline(tmp_path, RECIPE)
    pipeline.run(only="a", force=True)
    lines = {line.stage: line for line in pipeline.status()}
    assert lines["a"].state == "fresh"
    assert lines["b"].state == "stale" and "upstream a was recomputed" in lines["b"].reason
    assert lines["c"].state == "fresh"  # still consistent with b's current run
    with pytest.raises(EngineError, match="stage b has no fresh output"):
        pipeline.run(only="c")
    CALLS.clear()
    pipeline.run()
    assert CALLS == ["b", "c"]
    assert states(pipeline) == {"a": "fresh", "b": "fresh", "c": "fresh"}


def test_only_does_not_combine_with_a_range(tmp_path):
    with pytest.raises(EngineError, match="does not combine"):
        toy_pipeline(tmp_path, RECIPE).run(start="a", only="b")


def test_manifest_records_inputs_and_rerun_command(tmp_path):
    pipeline = toy_pipeline(tmp_path, RECIPE)
    pipeline.run()
    manifest = json.loads((pipeline.plan["c"].dir / "manifest.json").read_text())
    assert manifest["params"] == {"z": 1}
    assert manifest["upstream"]["b"]["key"] == pipeline.plan["b"].key
    assert manifest["upstream"]["b"]["run"] == pipeline.plan["b"].artifact.run_id is not None
    assert manifest["code"] == {m: engine.code_version(m) for m in engine.import_closure("tests.toy_stages")}
    assert "tests.toy_stages" in manifest["code"]
    assert manifest["command"] == "asrpipe run --task demo-hw3p2 --only c"
    assert manifest["metrics"]["resumed"] is False
    assert {"git_sha", "seconds", "started", "outputs"} <= set(manifest)
    assert "out.txt" in manifest["outputs"]


def test_failed_stage_is_not_complete_and_restarts(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        toy_pipeline(tmp_path, RECIPE, {"fail_in": "b"}).run()
    pipeline = toy_pipeline(tmp_path, RECIPE)
    assert states(pipeline) == {"a": "fresh", "b": "incomplete", "c": "missing"}
    assert not (pipeline.plan["b"].dir / DONE).exists()
    CALLS.clear()
    pipeline.run()
    assert CALLS == ["b", "c"]
    manifest = json.loads((pipeline.plan["b"].dir / "manifest.json").read_text())
    assert manifest["metrics"]["resumed"] is False  # not resumable: the partial directory was wiped


def test_resumable_stage_continues_in_its_directory(tmp_path):
    with pytest.raises(RuntimeError):
        toy_pipeline(tmp_path, RECIPE, {"fail_in": "b"}, resumable_b=True).run()
    pipeline = toy_pipeline(tmp_path, RECIPE, resumable_b=True)
    assert "will resume" in {line.stage: line for line in pipeline.status()}["b"].reason
    pipeline.run()
    manifest = json.loads((pipeline.plan["b"].dir / "manifest.json").read_text())
    assert manifest["metrics"]["resumed"] is True


def test_killed_process_leaves_no_complete_stage(tmp_path):
    flag = tmp_path / "started"
    options = {"sleep_in": "b", "started_flag": str(flag)}
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "tests.toy_stages", str(tmp_path), json.dumps(options)], cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not flag.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert flag.exists(), "the toy pipeline never reached stage b"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    pipeline = toy_pipeline(tmp_path, {"a": {"x": 1}, "b": {"y": 1}})
    assert states(pipeline) == {"a": "fresh", "b": "incomplete", "c": "missing"}
    pipeline.run()
    assert states(pipeline) == {"a": "fresh", "b": "fresh", "c": "fresh"}
