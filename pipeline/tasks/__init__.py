"""Task families: which stages make up a family's pipeline, and where its recipe schema lives.

Every family shares download → normalize → … → select → … → csv → submit; the model-specific stages are
`pipeline/stages/train_<kind>.py` and `decode_<kind>.py` (each defines a STAGE named "train" / "decode"), and the
recipe schema is `pipeline/tasks/<family>_recipe.py` (torch-free; its SECTIONS dict adds/replaces recipe sections).
"""
from __future__ import annotations

import importlib

FAMILY_KIND = {"hw1p2": "frames", "hw3p2": "ctc", "hw4p2": "seq2seq"}


def _module_exists(name: str) -> bool:
    from pipeline.engine import _module_file
    from pipeline.errors import AsrpipeError

    try:
        _module_file(name)
        return True
    except AsrpipeError:
        return False


def stages_for(family: str) -> list:
    from pipeline.stages import csv, download, normalize, select, submit

    kind = FAMILY_KIND.get(family)
    modules = [f"pipeline.stages.train_{kind}", f"pipeline.stages.decode_{kind}"]
    if kind is None or not all(_module_exists(m) for m in modules):
        return [download.STAGE, normalize.STAGE]  # a family whose recipe is not built yet: data stages only
    train, decode = (importlib.import_module(m).STAGE for m in modules)
    return [download.STAGE, normalize.STAGE, train, select.STAGE, decode, csv.STAGE, submit.STAGE]


def recipe_sections(family: str) -> dict:
    """The family's own recipe sections (model, train, and optionally decode/select overrides)."""
    name = f"pipeline.tasks.{family}_recipe"
    return dict(importlib.import_module(name).SECTIONS) if _module_exists(name) else {}
