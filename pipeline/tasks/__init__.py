"""Task families: which stages make up a family's pipeline."""
from __future__ import annotations


def stages_for(family: str) -> list:
    from pipeline.stages import csv, decode, download, normalize, select, submit, train

    if family == "hw3p2":
        return [download.STAGE, normalize.STAGE, train.STAGE, select.STAGE, decode.STAGE, csv.STAGE, submit.STAGE]
    # hw1p2 / hw4p2 recipes are built separately; their data stages already work.
    return [download.STAGE, normalize.STAGE]
