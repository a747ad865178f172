"""Recipes: a YAML file of sections (normalize, model, train, select, decode, submit), `--set key=value` overrides,
validated by the pydantic schema of each section so a typo is one clear line, not a silent default."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pipeline.errors import AsrpipeError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(AsrpipeError, ValueError):
    """One line naming the file/key and what was expected."""


def _run_ref(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"YAML read an unquoted run key as the number {value!r}: quote run keys, e.g. ['0123abcd']")
    return value


RunRef = Annotated[str, BeforeValidator(_run_ref)]  # a train run's key prefix or folder name


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NormalizeConfig(Section):
    method: Literal["cmvn", "global"] = "cmvn"  # per-utterance CMVN (the starters' default) or global MVN from train


class SelectConfig(Section):
    method: Literal["best", "average-best", "average-last"] = "best"
    n: int = Field(1, ge=1)


class DecodeConfig(Section):
    beam: int = Field(20, ge=1)
    backend: str = "asrpipe"          # asrpipe | ctcdecode | ctc-beam-decoder | cuda-ctc (greedy always reported too)
    cutoff_top_n: int | None = Field(None, ge=1)   # ctcdecode's per-frame class pruning; None: exact search
    batch_size: int = Field(16, ge=1)
    ensemble_runs: list[RunRef] = []     # other train runs (keys from `asrpipe runs`) whose outputs are averaged in
    lm_order: int = Field(0, ge=0, le=4)  # n-gram over the output symbols, fused into the search; 0: no LM
    alpha: float = 0.0                # LM weight (ctcdecode's alpha)
    beta: float = 0.0                 # length bonus per symbol (ctcdecode's beta)


class SubmitConfig(Section):
    message: str = ""


def section_schemas(family: str) -> dict[str, type[BaseModel]]:
    """The recipe schema of a task family (torch-free, so reading a recipe stays fast): the shared sections, with
    the family's own (`pipeline/tasks/<kind>_recipe.py` SECTIONS, e.g. model, train, data) added or replacing them."""
    from pipeline.tasks import recipe_sections

    shared = {"normalize": NormalizeConfig, "select": SelectConfig, "decode": DecodeConfig, "submit": SubmitConfig}
    return {**shared, **recipe_sections(family)}


def recipe_path(family: str, name: str) -> Path:
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.exists():
            raise ConfigError(f"--config {name}: file not found")
        return candidate
    path = CONFIG_DIR / family / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (CONFIG_DIR / family).glob("*.yaml"))
        raise ConfigError(f"--config {name}: no recipe named {name!r} for {family} (known: {', '.join(known) or 'none'})")
    return path


def parse_value(text: str) -> Any:
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text.strip()
    quoted = text.strip()[:1] in ("'", '"')
    if isinstance(value, str) and not quoted:  # YAML 1.1 reads 3e-3 as a string
        for cast in (int, float):
            try:
                return cast(value)
            except ValueError:
                pass
    return value


def apply_override(recipe: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment}: expected key=value, e.g. --set train.lr=3e-3")
    dotted, _, text = assignment.partition("=")
    *parents, leaf = dotted.strip().split(".")
    node = recipe
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment}: {part!r} is a value, not a section")
    node[leaf] = parse_value(text)


def _describe(error: dict, schemas: dict[str, type[BaseModel]]) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        section, *rest = [str(p) for p in error["loc"]]
        model = schemas.get(section)
        fields = list(model.model_fields) if model else []
        if rest and len(rest) == 1:
            close = difflib.get_close_matches(rest[0], fields, n=1)
            hint = f" (did you mean {section}.{close[0]}?)" if close else f" (valid: {', '.join(fields)})"
        else:
            hint = ""
        return f"{loc}: unknown key{hint}"
    message = error["msg"].removeprefix("Value error, ")
    given = error.get("input")
    return f"{loc}: {message}" if isinstance(given, dict) else f"{loc}: {message} (got {given!r})"


def load_recipe(family: str, name: str, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, dict]:
    """Resolved recipe: every section validated and filled with defaults (plain dicts, ready to hash)."""
    path = recipe_path(family, name)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read as a YAML recipe ({exc.__class__.__name__})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    for assignment in overrides:
        apply_override(raw, assignment)
    schemas = section_schemas(family)
    unknown = sorted(set(raw) - set(schemas))
    if unknown:
        raise ConfigError(f"{path}: unknown section {unknown[0]!r} (valid: {', '.join(schemas)})")
    resolved = {}
    for section, schema in schemas.items():
        try:
            resolved[section] = schema.model_validate(raw.get(section) or {}).model_dump(mode="json")
        except ValidationError as exc:
            first = exc.errors()[0]
            first = {**first, "loc": (section, *first["loc"])}
            raise ConfigError(f"{path.name}: {_describe(first, schemas)}") from None
    return resolved
