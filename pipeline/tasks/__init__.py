"""The task families: one table says, per family, what it is made of.

    family  kind     labels    archs (pipeline/models/)   made of
    hw1p2   frames   frame     mlp                        stages/train_frames.py, decode_frames.py,
                                                          tasks/frames_recipe.py, training/frames.py
    hw3p2   ctc      sequence  ctc_rnn, dilated_conv      … train_ctc, decode_ctc, ctc_recipe, training/ctc.py
    hw4p2   seq2seq  sequence  las, transformer           … train_seq2seq, decode_seq2seq, seq2seq_recipe, …

Every family shares download → normalize → train → select → decode → csv → submit; the `kind` names its own
modules, so one name means one idea across folders. A recipe schema's SECTIONS add to or replace the shared
sections of pipeline/config.py.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str                 # the profiles' family: hw1p2, hw3p2, hw4p2
    kind: str                 # frames | ctc | seq2seq
    label_kind: str           # what normalize stores: a class per frame, or a symbol sequence per utterance
    archs: tuple[str, ...]    # model files it trains (pipeline/models/<arch>.py; keys of pipeline.models.load.ARCHS)

    def stages(self) -> list:
        from pipeline.stages import csv, download, normalize, select, submit

        train, decode = (importlib.import_module(f"pipeline.stages.{stage}_{self.kind}").STAGE
                         for stage in ("train", "decode"))
        return [download.STAGE, normalize.STAGE, train, select.STAGE, decode, csv.STAGE, submit.STAGE]

    def recipe_sections(self) -> dict:
        return dict(importlib.import_module(f"pipeline.tasks.{self.kind}_recipe").SECTIONS)


FAMILIES = {f.name: f for f in (
    Family("hw1p2", "frames", "frame", ("mlp",)),
    Family("hw3p2", "ctc", "sequence", ("ctc_rnn", "dilated_conv")),
    Family("hw4p2", "seq2seq", "sequence", ("las", "transformer")),
)}


def stages_for(family: str) -> list:
    return FAMILIES[family].stages()


def recipe_sections(family: str) -> dict:
    """The family's own recipe sections (model, train, and optionally data/decode/select overrides)."""
    return FAMILIES[family].recipe_sections()
