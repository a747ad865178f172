"""The stage engine: content-addressed stage outputs, manifests, completion markers, status with reasons.

A stage's key = sha256 of (its resolved params, the keys of its upstream stages, the code version of every module in
the static import closure of its module — derived from the source, never typed by hand; see `import_closure`).
Its output lives in `artifacts/<competition>/<stage>/<readable-params>-<key8>/` with `manifest.json` and, written
last, the completion marker `.done` (which holds a run id). A stage is fresh when its key has a complete directory
AND the upstream runs it was computed from are still the current ones (a `--force`d upstream makes it stale):
running a fresh stage is a no-op. A directory without the marker is an interrupted run: resumable stages (train)
continue in it, others start over.
"""
from __future__ import annotations

import ast
import fcntl
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
import tokenize
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from pipeline.errors import AsrpipeError
from pipeline.files import write_json_atomic
from pipeline.tasks.profiles import Profile

DONE = ".done"
MANIFEST = "manifest.json"
console = Console(highlight=False, soft_wrap=True)


class EngineError(AsrpipeError, RuntimeError):
    """A pipeline that cannot proceed; the message is one actionable line."""


@dataclass(frozen=True)
class Stage:
    name: str
    upstream: tuple[str, ...]
    params: Callable[[Profile, dict], dict]             # (profile, resolved recipe) -> params that define the output
    label: Callable[[dict], str]                        # params -> readable directory prefix, e.g. "beam20-asrpipe"
    run: Callable[["StageRun"], dict]                   # writes into run.out, returns metrics for the manifest
    resumable: bool = False
    spends: bool = False    # it spends something outside (a Kaggle submission): --force skips it, --resubmit forces it

    @property
    def module(self) -> str:
        """The module that defines run(): its import closure is the stage's code (see import_closure)."""
        module = self.run.__module__
        if module == "__main__":  # run as `python -m package.module`: the name it has when imported
            spec = getattr(sys.modules.get("__main__"), "__spec__", None)
            module = spec.name if spec is not None else module
        return module


@dataclass
class Artifact:
    stage: str
    key: str
    dir: Path

    @property
    def complete(self) -> bool:
        return (self.dir / DONE).exists()

    @property
    def run_id(self) -> str | None:
        """Identifies one completed computation of this key (a forced recompute gets a new one)."""
        try:
            return json.loads((self.dir / DONE).read_text())["run"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @property
    def manifest(self) -> dict:
        return json.loads((self.dir / MANIFEST).read_text())


@dataclass
class StageRun:
    """What a stage's run() receives."""
    stage: Stage
    profile: Profile
    params: dict
    out: Path
    inputs: dict[str, Artifact]
    options: dict[str, Any]            # runtime options that do not change the output (workers, wandb mode, nproc)
    artifacts_root: Path
    submissions_root: Path
    command: str
    pipeline_artifacts: dict[str, Artifact] = field(default_factory=dict)  # every stage of the pipeline, by name

    @property
    def keys(self) -> dict[str, str]:
        return {name: artifact.key for name, artifact in self.pipeline_artifacts.items()}

    def log(self, message: str) -> None:
        console.print(f"      {message}")


# ---- keys and code versions ----------------------------------------------------------------------------------

# Modules that are neither part of any stage's code version nor followed, because their code cannot change what a
# stage writes. Keep this short: every entry is a module whose edits would otherwise re-run stages for nothing.
CODE_EXCLUDED: dict[str, str] = {
    "pipeline.progress": "progress bars: terminal display only",
    "pipeline.kaggle_client": "Kaggle transport (API calls, retries, auth): moves bytes that stages hash and check",
    "pipeline.engine": "orchestration: when a stage runs, not what it computes; a change to keying changes keys "
                       "anyway (the file helpers stages use live in pipeline.files, which is in their keys)",
    "pipeline.tasks": "the family table (package __init__): which stages make a pipeline; the one value a stage "
                      "reads from it (normalize's label_kind) is in that stage's params, and its lazy imports of "
                      "every stage module would put all stages into every stage's key",
}

_code_cache: dict[str, str] = {}
_closure_cache: dict[str, tuple[str, ...]] = {}
_imports_cache: dict[str, tuple[str, ...]] = {}


def clear_code_caches() -> None:
    """Forget computed code versions and import closures (they are cached per process)."""
    _code_cache.clear()
    _closure_cache.clear()
    _imports_cache.clear()


def stage_code(stage: Stage) -> dict[str, str]:
    """The stage's code version: {module: code_version(module)} over the import closure of its module."""
    return {module: code_version(module) for module in import_closure(stage.module)}


def import_closure(module: str) -> list[str]:
    """`module` plus every `pipeline.*` module that importing it or calling its functions can import, by parsing
    source (nothing is imported): `import pipeline.x`, `from pipeline.x import y` (y a submodule or a name), relative
    imports, imports inside functions (stages import their torch-side modules inside run()), and string literals that
    name a pipeline module, as dynamic imports take them (`import_module("pipeline.x")`, a factory such as
    "pipeline.training.ctc:make_task"). A package's `__init__.py` counts whenever a module in it is imported, as Python
    runs it. Modules in CODE_EXCLUDED are left out and not followed. Sorted; cached per process."""
    if module not in _closure_cache:
        seen: set[str] = set()
        stack = [module]
        while stack:
            current = stack.pop()
            if current in seen or current in CODE_EXCLUDED:
                continue
            seen.add(current)
            stack.extend(_pipeline_imports(current))
        _closure_cache[module] = tuple(sorted(seen))
    return list(_closure_cache[module])


def _pipeline_imports(module: str) -> tuple[str, ...]:
    """The `pipeline.*` modules that running `module`'s code imports directly (with the packages that runs)."""
    if module in _imports_cache:
        return _imports_cache[module]
    path = _module_file(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    source = path.read_bytes()
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as error:
        raise EngineError(f"cannot compute the code version of {module}: {error}") from error
    names = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    continue  # beyond the top-level package: Python refuses it too
                base = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names  # `from pipeline.x import submodule`
                         if alias.name != "*" and _find_module_file(f"{base}.{alias.name}") is not None)
        else:  # a string naming a module: "pipeline.x" or "pipeline.x:function"
            name = node.value.partition(":")[0]
            if _find_module_file(name) is not None:
                names.add(name)
    found: set[str] = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}  # its packages
    for name in names:
        parts = name.split(".")
        if parts[0] == "pipeline":
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))  # a package runs before its modules
    found.discard(module)
    _imports_cache[module] = tuple(sorted(m for m in found if m.split(".")[0] == "pipeline"))
    return _imports_cache[module]


_MODULE_STRING = re.compile(r"pipeline(\.\w+)+(:[\w.]+)?")


def _import_nodes(tree: ast.AST):
    """Import statements anywhere (module level, functions, classes, blocks) and string constants that are a
    pipeline module name."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.fullmatch(node.value):
            yield node


def code_version(module: str) -> str:
    """Hash of one module's token stream (a package: its __init__.py), so comments and formatting do not count."""
    if module not in _code_cache:
        path = _module_file(module)
        digest = hashlib.sha256()
        digest.update(path.name.encode())
        digest.update(_code_tokens(path).encode())
        _code_cache[module] = digest.hexdigest()[:16]
    return _code_cache[module]


def _code_tokens(path: Path) -> str:
    """The token stream without comments and blank lines: stable across Python versions and reformatting."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING}
    with open(path, "rb") as handle:
        return "\x1f".join(f"{t.type}:{t.string}" for t in tokenize.tokenize(handle.readline) if t.type not in skip)


def _module_file(module: str) -> Path:
    """A module's source file, found without importing it (find_spec would import its parent packages)."""
    path = _find_module_file(module)
    if path is None:
        raise EngineError(f"stage code module {module!r} not found")
    return path


_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _find_module_file(module: str) -> Path | None:
    relative = os.path.join(*module.split("."))
    entries = [_REPO] if module.split(".")[0] == "pipeline" else [_REPO, *sys.path]  # pipeline.* lives here
    for entry in entries:
        for candidate in (os.path.join(entry, relative + ".py"), os.path.join(entry, relative, "__init__.py")):
            if os.path.isfile(candidate):
                return Path(candidate)
    return None


def stage_key(name: str, params: dict, upstream: dict[str, str], code: dict[str, str]) -> str:
    blob = json.dumps({"stage": name, "params": params, "upstream": upstream, "code": code}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def git_sha() -> str | None:
    repo = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def discard(folder: Path) -> None:
    """Remove a stage directory so that no half-deleted state can look complete: rename first, then delete."""
    if folder.exists():
        trash = folder.with_name(f"{folder.name}.trash-{os.getpid()}")
        os.replace(folder, trash)
        shutil.rmtree(trash)


# ---- planning ------------------------------------------------------------------------------------------------

@dataclass
class Planned:
    stage: Stage
    params: dict
    upstream: dict[str, str]
    code: dict[str, str]
    key: str
    dir: Path

    @property
    def artifact(self) -> Artifact:
        return Artifact(self.stage.name, self.key, self.dir)


@dataclass
class StatusLine:
    stage: str
    state: str          # fresh | stale | missing | incomplete
    reason: str
    dir: Path


class Pipeline:
    def __init__(self, profile: Profile, recipe: dict, stages: list[Stage], *, artifacts_root: Path,
                 submissions_root: Path, options: dict | None = None, config_name: str = "",
                 overrides: tuple[str, ...] = ()):
        self.profile, self.recipe, self.stages = profile, recipe, stages
        self.artifacts_root, self.submissions_root = Path(artifacts_root), Path(submissions_root)
        self.options = options or {}
        self.config_name, self.overrides = config_name, tuple(overrides)
        self.plan = self._plan()

    def _plan(self) -> dict[str, Planned]:
        plan: dict[str, Planned] = {}
        for stage in self.stages:
            params = stage.params(self.profile, self.recipe)
            upstream = {name: plan[name].key for name in stage.upstream}
            code = stage_code(stage)
            key = stage_key(stage.name, params, upstream, code)
            folder = self.artifacts_root / self.profile.name / stage.name / f"{stage.label(params)}-{key[:8]}"
            plan[stage.name] = Planned(stage, params, upstream, code, key, folder)
        return plan

    def names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    def select(self, start: str | None, stop: str | None, only: str | None) -> list[str]:
        names = self.names()
        for given in (start, stop, only):
            if given is not None and given not in names:
                raise EngineError(f"unknown stage {given!r} (stages: {', '.join(names)})")
        if only:
            return [only]
        first = names.index(start) if start else 0
        last = names.index(stop) if stop else len(names) - 1
        if first > last:
            raise EngineError(f"--from {start} comes after --to {stop}")
        return names[first : last + 1]

    # ---- status ---------------------------------------------------------------------------------------------
    def status(self) -> list[StatusLine]:
        lines: list[StatusLine] = []
        states: dict[str, str] = {}
        for name, planned in self.plan.items():
            state, reason = self._state(planned, states)
            states[name] = state
            lines.append(StatusLine(name, state, reason, planned.dir))
        return lines

    def _state(self, planned: Planned, states: dict[str, str]) -> tuple[str, str]:
        if planned.artifact.complete:
            replaced = self._recomputed_upstream(planned)
            if not replaced:
                return "fresh", "output complete for the current inputs"
            return "stale", f"upstream {', '.join(replaced)} was recomputed since (--force)"
        if planned.dir.exists():
            how = "will resume" if planned.stage.resumable else "will restart"
            return "incomplete", f"an interrupted run with these inputs ({how})"
        previous = self._latest_complete(planned.stage.name)
        not_fresh = [u for u in planned.stage.upstream if states.get(u) != "fresh"]
        if previous is None:
            reason = "never run" + (f"; upstream {', '.join(not_fresh)} not fresh" if not_fresh else "")
            return "missing", reason
        return "stale", self._why_changed(planned, previous, not_fresh)

    def _recomputed_upstream(self, planned: Planned) -> list[str]:
        """Upstream stages whose current run is not the one this output was computed from."""
        recorded = planned.artifact.manifest.get("upstream", {}) if (planned.dir / MANIFEST).exists() else {}
        return [name for name in planned.stage.upstream
                if recorded.get(name, {}).get("run") != self.plan[name].artifact.run_id]

    def is_fresh(self, name: str) -> bool:
        planned = self.plan[name]
        return planned.artifact.complete and not self._recomputed_upstream(planned)

    def _latest_complete(self, stage: str) -> dict | None:
        folder = self.artifacts_root / self.profile.name / stage
        manifests = [d / MANIFEST for d in folder.glob("*") if (d / DONE).exists() and (d / MANIFEST).exists()]
        if not manifests:
            return None
        return json.loads(max(manifests, key=lambda p: p.stat().st_mtime).read_text())

    @staticmethod
    def _why_changed(planned: Planned, previous: dict, not_fresh: list[str]) -> str:
        reasons = []
        old_params = _flatten(previous.get("params", {}))
        new_params = _flatten(planned.params)
        for key in sorted(set(old_params) | set(new_params)):
            if old_params.get(key, "∅") != new_params.get(key, "∅"):
                reasons.append(f"param {key}: {old_params.get(key, '∅')} → {new_params.get(key, '∅')}")
        for name, key in planned.upstream.items():
            if previous.get("upstream", {}).get(name, {}).get("key") != key:
                reasons.append(f"upstream {name} changed" + (" (not fresh)" if name in not_fresh else ""))
        for module, version in planned.code.items():
            if previous.get("code", {}).get(module) != version:
                reasons.append(f"code of {module} changed")
        for module in sorted(set(previous.get("code", {})) - set(planned.code)):
            reasons.append(f"code no longer imports {module}")
        return "; ".join(reasons) or "inputs differ from the last complete run"

    # ---- running --------------------------------------------------------------------------------------------
    def run(self, start: str | None = None, stop: str | None = None, only: str | None = None,
            force: bool = False, resubmit: bool = False) -> dict[str, Artifact]:
        """Run the selected stages (fresh ones are no-ops). Recomputing and re-submitting are separate decisions:
        `force` recomputes every selected stage except those that spend something outside (submit), which only
        `resubmit` forces."""
        if only and (start or stop):
            raise EngineError("--only runs one stage; it does not combine with --from/--to")
        selected = self.select(start, stop, only)
        needed = {a for name in selected for a in self._ancestors(name)} - set(selected)
        for name in self.names():
            if name in needed and not self.is_fresh(name):
                raise EngineError(
                    f"stage {name} has no fresh output for these inputs; run it first "
                    f"(asrpipe run --task {self.profile.name} --to {name})")
        done: dict[str, Artifact] = {}
        for name in selected:
            planned = self.plan[name]
            done[name] = self._run_stage(planned, force=resubmit if planned.stage.spends else force)
        return done

    def _ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.plan[name].stage.upstream)
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self.plan[current].stage.upstream)
        return seen

    def rerun_command(self, stage: str) -> str:
        parts = ["asrpipe", "run", "--task", self.profile.name, "--only", stage]
        if self.config_name:
            parts += ["--config", self.config_name]
        for assignment in self.overrides:
            parts += ["--set", assignment]
        return shlex.join(parts)

    def _run_stage(self, planned: Planned, force: bool) -> Artifact:
        artifact = planned.artifact
        shown = _display(planned.dir)
        if self.is_fresh(planned.stage.name) and not force:
            console.print(f"[green]fresh[/]  {planned.stage.name:<9} {shown}")
            return artifact
        planned.dir.parent.mkdir(parents=True, exist_ok=True)
        with _lock(planned.dir.with_name(planned.dir.name + ".lock")):
            if self.is_fresh(planned.stage.name) and not force:  # another process finished it while we waited
                console.print(f"[green]fresh[/]  {planned.stage.name:<9} {shown}")
                return artifact
            if artifact.complete or (planned.dir.exists() and not planned.stage.resumable):
                discard(planned.dir)  # forced, computed from replaced upstream runs, or interrupted and not resumable
            resuming = planned.dir.exists()
            planned.dir.mkdir(parents=True, exist_ok=True)
            console.print(f"[yellow]{'resume' if resuming else 'run'}[/]    {planned.stage.name:<9} {shown}")
            inputs = {name: self.plan[name].artifact for name in planned.stage.upstream}
            everything = {name: p.artifact for name, p in self.plan.items()}
            run = StageRun(planned.stage, self.profile, planned.params, planned.dir, inputs, self.options,
                           self.artifacts_root, self.submissions_root, self.rerun_command(planned.stage.name),
                           everything)
            started = time.time()
            metrics = planned.stage.run(run) or {}
            seconds = time.time() - started
            run_id = uuid.uuid4().hex
            write_json_atomic(planned.dir / MANIFEST, self._manifest(planned, metrics, started, seconds, run_id))
            write_json_atomic(planned.dir / DONE, {"key": planned.key, "run": run_id})
        scalars = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float, str)) and len(str(v)) < 40]
        summary = ", ".join(f"{k}={_short(v)}" for k, v in scalars[:4])
        console.print(f"[green]done[/]   {planned.stage.name:<9} {seconds:.1f} s  {summary}")
        return artifact

    def _manifest(self, planned: Planned, metrics: dict, started: float, seconds: float, run_id: str) -> dict:
        return {
            "stage": planned.stage.name,
            "competition": self.profile.name,
            "key": planned.key,
            "run": run_id,
            "params": planned.params,
            "upstream": {name: {"key": key, "run": self.plan[name].artifact.run_id, "dir": str(self.plan[name].dir)}
                         for name, key in planned.upstream.items()},
            "code": planned.code,
            "metrics": metrics,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(seconds, 3),
            "git_sha": git_sha(),
            "command": self.rerun_command(planned.stage.name),
            "invoked_as": shlex.join(["asrpipe", *sys.argv[1:]]),
            "python": platform.python_version(),
            "outputs": sorted(p.name for p in planned.dir.iterdir() if p.name not in (MANIFEST, DONE)),
        }


class _lock:
    """An exclusive lock file so two processes never write the same stage directory at once."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.handle = open(self.path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print(f"      waiting for another asrpipe process working on {_display(self.path)}")
            fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()  # the file stays: unlinking it would let a waiting process lock a stale inode


def _flatten(params: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
