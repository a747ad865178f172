"""Cache keys are derived from the source: a stage's code version covers every `pipeline.*` module its module imports,
transitively (lazy imports inside functions included), except the short CODE_EXCLUDED list.

The closure is checked against two independent computations: a regex walker over the source text (lazy imports), and
what actually lands in `sys.modules` when a fresh interpreter imports the stage module and its key's modules.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline import engine
from pipeline.engine import CODE_EXCLUDED, import_closure, stage_code
from pipeline.tasks import FAMILIES, stages_for
from tests.toy_stages import toy_pipeline

REPO = Path(__file__).resolve().parent.parent
RECIPE = {"a": {"x": 1}, "b": {"y": 1}, "c": {"z": 1}}


@pytest.fixture(autouse=True)
def fresh_caches():
    engine.clear_code_caches()
    yield
    engine.clear_code_caches()


def all_stage_modules() -> list[str]:
    return sorted({stage.module for family in FAMILIES for stage in stages_for(family)})


# ---- an independent walker: regular expressions over the source text -----------------------------------------

_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*(?:\\\n[^\n]*)*)", re.M)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([^\n]*)", re.M)
_QUOTED = re.compile(r"""["'](pipeline(?:\.\w+)+)(?::[\w.]+)?["']""")  # import_module("pipeline.x"), "pipeline.x:f"


def _file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def regex_closure(module: str, root: Path = REPO) -> set[str]:
    seen: set[str] = set()
    stack = [module]
    while stack:
        current = stack.pop()
        if current in seen or current in CODE_EXCLUDED:
            continue
        seen.add(current)
        path = _file(root, current)
        assert path is not None, f"{current} not found"
        text = path.read_text()
        package = current if path.name == "__init__.py" else current.rpartition(".")[0]
        names = {current}
        for match in _FROM.finditer(text):
            base, imported = match.group(1), match.group(2)
            if base.startswith("."):
                level = len(base) - len(base.lstrip("."))
                parts = package.split(".")[: len(package.split(".")) - (level - 1)]
                base = ".".join(parts + ([base.lstrip(".")] if base.lstrip(".") else []))
            names.add(base)
            imported = re.sub(r"#[^\n]*", "", imported).replace("\\\n", " ").strip("() \n")
            for item in imported.split(","):
                word = item.strip().split(" ")[0]
                if word and _file(root, f"{base}.{word}") is not None:
                    names.add(f"{base}.{word}")
        for match in _IMPORT.finditer(text):
            for item in re.sub(r"#.*", "", match.group(1)).split(","):
                if item.strip():
                    names.add(item.strip().split(" ")[0])
        names.update(match.group(1) for match in _QUOTED.finditer(text) if _file(root, match.group(1)))
        for name in names:
            parts = name.split(".")
            if parts[0] == "pipeline":
                stack.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return seen


# ---- (a) every module a stage imports transitively is in its key ---------------------------------------------

@pytest.mark.parametrize("module", all_stage_modules())
def test_closure_covers_every_module_the_source_imports(module):
    key = set(import_closure(module))
    missing = regex_closure(module) - key
    assert not missing, f"{module}'s key leaves out {sorted(missing)}"
    assert not key & set(CODE_EXCLUDED)


def test_every_stage_key_is_its_modules_closure():
    for family in FAMILIES:
        for stage in stages_for(family):
            code = stage_code(stage)
            assert sorted(code) == import_closure(stage.module)
            assert stage.module in code and stage.module.startswith("pipeline.stages.")


_PROBE = """
import importlib, json, sys
stage, key = sys.argv[1], json.loads(sys.argv[2])
importlib.import_module(stage)
for name in key:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m == "pipeline" or m.startswith("pipeline."))))
"""


@pytest.mark.slow  # a fresh interpreter per stage module, each importing torch (~10 s in all)
def test_closure_covers_what_python_actually_imports():
    """A fresh interpreter imports the stage module and every module of its key (so lazily imported modules run too):
    every pipeline.* module that ends up loaded must be in the key, unless excluded or loaded only by an excluded
    module."""
    modules = all_stage_modules()
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def probe(module: str) -> list[str]:
        done = subprocess.run([sys.executable, "-c", _PROBE, module, json.dumps(import_closure(module))], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        loaded = dict(zip(modules, pool.map(probe, modules)))
    via_excluded = set().union(*(regex_closure(m) | {m} for m in CODE_EXCLUDED if _file(REPO, m)))
    for module, names in loaded.items():
        missing = set(names) - set(import_closure(module)) - set(CODE_EXCLUDED) - via_excluded
        assert not missing, f"importing {module} loads {sorted(missing)}, which its key leaves out"


def test_known_dependencies_are_in_the_keys():
    """The omissions the hand-typed lists had."""
    assert "pipeline.decoding.ctc_greedy" in import_closure("pipeline.stages.train_ctc")  # ranks its checkpoints
    assert "pipeline.training.checkpoints" in import_closure("pipeline.stages.select")
    decode = import_closure("pipeline.stages.decode_ctc")
    assert {"pipeline.training.checkpoints", "pipeline.data.store"} <= set(decode)
    assert "pipeline.progress" not in decode  # excluded: display only


# ---- (b) a change in a transitively imported module makes the stage stale, a comment does not -----------------

@pytest.fixture
def source_copy(tmp_path, monkeypatch):
    """A copy of pipeline/ that the engine reads its code versions from (the checkout itself is never touched)."""
    root = tmp_path / "src"
    shutil.copytree(REPO / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(engine, "_REPO", str(root))
    engine.clear_code_caches()
    return root


def _hw3p2_keys() -> dict[str, tuple[str, dict]]:
    from pipeline.config import load_recipe
    from pipeline.engine import Pipeline
    from pipeline.tasks.profiles import PROFILES

    engine.clear_code_caches()
    pipeline = Pipeline(PROFILES["demo-hw3p2"], load_recipe("hw3p2", "demo"), stages_for("hw3p2"),
                        artifacts_root=Path("/nonexistent"), submissions_root=Path("/nonexistent"))
    return {name: (planned.key, planned.code) for name, planned in pipeline.plan.items()}


def test_editing_a_transitive_import_changes_the_train_key(source_copy):
    greedy = source_copy / "pipeline" / "decoding" / "ctc_greedy.py"
    assert "pipeline.decoding.ctc_greedy" not in Path(REPO / "pipeline/stages/train_ctc.py").read_text()
    before = _hw3p2_keys()
    greedy.write_text(greedy.read_text() + "\n# only a comment\n\n\n")
    assert _hw3p2_keys() == before
    greedy.write_text(greedy.read_text() + "\ndef added():\n    return 1\n")
    after = _hw3p2_keys()
    assert after["train"][0] != before["train"][0]
    changed = {module for module, version in after["train"][1].items() if before["train"][1][module] != version}
    assert changed == {"pipeline.decoding.ctc_greedy"}
    assert after["download"] == before["download"] and after["normalize"] == before["normalize"]
    for stage in ("csv", "submit"):  # their keys change through upstream keys, their own code does not
        assert after[stage][1] == before[stage][1]


def test_status_names_the_changed_module(tmp_path, source_copy):
    """The engine end to end, with toy run() functions whose code is hw3p2's train stage module."""
    greedy = source_copy / "pipeline" / "decoding" / "ctc_greedy.py"
    toy_pipeline(tmp_path, RECIPE, module_b="pipeline.stages.train_ctc").run()
    engine.clear_code_caches()
    greedy.write_text("# a leading comment\n" + greedy.read_text().replace("\n\n\ndef ", "\n\n\n\n# c\ndef ", 1))
    lines = {line.stage: line for line in toy_pipeline(tmp_path, RECIPE, module_b="pipeline.stages.train_ctc").status()}
    assert [lines[s].state for s in "abc"] == ["fresh"] * 3
    greedy.write_text(greedy.read_text() + "\ndef added():\n    return 1\n")
    engine.clear_code_caches()
    lines = {line.stage: line for line in toy_pipeline(tmp_path, RECIPE, module_b="pipeline.stages.train_ctc").status()}
    assert lines["a"].state == "fresh"
    assert lines["b"].state == "stale" and lines["b"].reason == "code of pipeline.decoding.ctc_greedy changed"
    assert lines["c"].state == "stale" and "upstream b changed" in lines["c"].reason


# ---- (c) what the walker follows -------------------------------------------------------------------------------

def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_walker_follows_lazy_relative_and_submodule_imports(tmp_path, monkeypatch):
    _write(tmp_path, {
        "pipeline/__init__.py": "",
        "pipeline/stages/__init__.py": "",
        "pipeline/stages/s.py": (
            "import os\n"
            "from pipeline.engine import Stage\n"          # excluded: neither in the key nor followed
            "def run(run):\n"
            "    from pipeline.lazy import thing\n"        # inside a function
            "    try:\n"
            "        from ..pkg import sub\n"               # relative; `sub` is a submodule
            "    except ImportError:\n"
            "        import pipeline.deep.mod as m\n"       # dotted; its packages run too
            "    return thing\n"
            "class K:\n"
            "    def f(self):\n"
            "        import importlib\n"
            "        return importlib.import_module('pipeline.dynamic')\n"
            "FACTORY = 'pipeline.factory:make_task'\n"),                # a module named in a string
        "pipeline/lazy.py": "from .leaf import x\nthing = x\n",
        "pipeline/leaf.py": "x = 1\n",
        "pipeline/pkg/__init__.py": "from pipeline.pkg_init_dep import y\n",
        "pipeline/pkg_init_dep.py": "y = 2\n",
        "pipeline/pkg/sub.py": "",
        "pipeline/deep/__init__.py": "",
        "pipeline/deep/mod.py": "",
        "pipeline/dynamic.py": "",
        "pipeline/factory.py": "",
        "pipeline/engine.py": "from pipeline.never import z\n",
        "pipeline/never.py": "",
        "pipeline/unused.py": "",
    })
    monkeypatch.setattr(engine, "_REPO", str(tmp_path))
    engine.clear_code_caches()
    assert import_closure("pipeline.stages.s") == [
        "pipeline", "pipeline.deep", "pipeline.deep.mod", "pipeline.dynamic", "pipeline.factory", "pipeline.lazy",
        "pipeline.leaf",
        "pipeline.pkg", "pipeline.pkg.sub", "pipeline.pkg_init_dep", "pipeline.stages", "pipeline.stages.s"]
    assert import_closure("pipeline.stages.s") == sorted(regex_closure("pipeline.stages.s", tmp_path))


def test_real_stages_lazy_imports_are_followed():
    """Stages import their torch-side modules inside run(): those (and what they import) are in the key."""
    for module in ("pipeline.stages.train_ctc", "pipeline.stages.decode_ctc", "pipeline.stages.select"):
        source = _file(REPO, module).read_text()
        lazy = set(re.findall(r"^[ \t]+from[ \t]+(pipeline[\w.]*)[ \t]+import", source, re.M)) - set(CODE_EXCLUDED)
        assert lazy, f"{module} has no lazy imports any more: pick another example"
        closure = set(import_closure(module))
        for name in lazy:
            assert name in closure and set(import_closure(name)) <= closure


def test_package_code_version_is_its_init_only(tmp_path, monkeypatch):
    _write(tmp_path, {"pipeline/__init__.py": "", "pipeline/p/__init__.py": "a = 1\n", "pipeline/p/m.py": "b = 1\n"})
    monkeypatch.setattr(engine, "_REPO", str(tmp_path))
    engine.clear_code_caches()
    before = engine.code_version("pipeline.p")
    (tmp_path / "pipeline/p/m.py").write_text("b = 2\n")
    engine.clear_code_caches()
    assert engine.code_version("pipeline.p") == before
