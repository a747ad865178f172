"""Write the real ctcdecode's answers on a fixed synthetic set to tests/data/ctcdecode_reference.json, so that the
compatibility tests of `pipeline.decoding.CTCBeamDecoder` run everywhere, not only where ctcdecode is built.

    ../shared/tools/ctcdecode/build.sh $PWD/.venv/bin/python     # the real ctcdecode 1.0.2 (never a dependency)
    .venv/bin/python tools/ctcdecode_reference.py

The inputs are not stored: `synthetic_ctc_batch` regenerates them from the seed (numpy's default_rng is stable).
Per case: the top REFERENCE_RANKS beams' tokens, and every live beam's length and score (ctcdecode fills beams of
zero probability with arbitrary prefixes scored 3.4e38; those are left out).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

INPUT = {"num_utterances": 24, "min_frames": 60, "max_frames": 240, "num_classes": 41, "seed": 7, "hardness": 2.0}
CASES = [
    {"beam_width": 20, "log_probs_input": True},
    {"beam_width": 20, "log_probs_input": True, "cutoff_top_n": 41},
    {"beam_width": 20, "log_probs_input": True, "cutoff_top_n": 10},
    {"beam_width": 20, "log_probs_input": True, "cutoff_prob": 0.5},
    {"beam_width": 8, "log_probs_input": False, "num_processes": 2},
    {"beam_width": 3, "log_probs_input": True, "blank_id": 5},
]
REFERENCE_RANKS = 3
LIVE_SCORE_LIMIT = 1e30  # ctcdecode scores zero-probability beams FLT_MAX
OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "ctcdecode_reference.json"


def labels(num_classes: int) -> list[str]:
    return [chr(0x4E00 + c) for c in range(num_classes)]


def main() -> None:
    from ctcdecode import CTCBeamDecoder

    from pipeline.decoding.ctc_synthetic import synthetic_ctc_batch

    log_probs, lengths = synthetic_ctc_batch(**INPUT)
    cases = []
    for case in CASES:
        probs = log_probs if case["log_probs_input"] else log_probs.exp()
        results, scores, _, out_lens = CTCBeamDecoder(labels(INPUT["num_classes"]), **case).decode(probs, lengths)
        utterances = []
        for b in range(len(lengths)):
            live = [r for r in range(case["beam_width"]) if scores[b, r] < LIVE_SCORE_LIMIT]
            utterances.append({
                "tokens": [results[b, r, : out_lens[b, r]].tolist() for r in live[:REFERENCE_RANKS]],
                "out_lens": [int(out_lens[b, r]) for r in live],
                "scores": [round(float(scores[b, r]), 5) for r in live],
            })
        cases.append({"arguments": case, "utterances": utterances})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"ctcdecode": "1.0.2", "input": INPUT, "cases": cases}, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB, {len(cases)} cases)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
