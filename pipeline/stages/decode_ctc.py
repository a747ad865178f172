"""decode (hw3p2): CTC decoding of dev and test with the selected model.

The model's log-probs are cached per selected checkpoint (`artifacts/<competition>/logprobs/<select-key>/`), so
another beam width or backend costs no network pass. Dev gets greedy, beam and oracle (best of the final beam)
Levenshtein side by side in the manifest. Outputs: `test_hypotheses.json`, `dev_results.json`.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from pipeline.engine import EngineError, Stage, StageRun, write_json_atomic
from pipeline.tasks.profiles import Profile


def params(profile: Profile, recipe: dict) -> dict:
    decode = recipe["decode"]
    return {"beam": decode["beam"], "backend": decode["backend"], "prune_top_k": decode["prune_top_k"],
            "batch_size": decode["batch_size"]}


def label(params: dict) -> str:
    return f"beam{params['beam']}-{params['backend']}"


def compute_log_probs(model, store, batch_size: int, description: str):
    """Per-utterance (T', C) float32 log-probs in store order, batched by length for little padding."""
    import torch

    from pipeline.progress import progress_bar

    order = sorted(range(len(store)), key=lambda i: int(store.lengths[i]))
    outputs: list = [None] * len(store)
    with torch.inference_mode(), progress_bar() as bar:
        task = bar.add_task(description, total=len(order))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            feats = [torch.from_numpy(store.features(i).copy()) for i in chunk]
            lengths = torch.tensor([len(f) for f in feats])
            padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
            log_probs, out_lengths = model(padded, lengths)
            for row, i in enumerate(chunk):
                outputs[i] = log_probs[row, : out_lengths[row]].float().clone()
            bar.advance(task, len(chunk))
    return outputs


def cached_log_probs(cache: Path, model_path: Path, stores: dict, batch_size: int) -> dict:
    """Load or compute each partition's log-probs; one process at a time per cache (decodes of several beams
    may run at once), and an unreadable cache file is recomputed rather than trusted."""
    import fcntl

    import torch

    from pipeline.training.checkpoints import load_model

    cache.mkdir(parents=True, exist_ok=True)
    result, model = {}, None
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name, store in stores.items():
            path = cache / f"{name}.pt"
            try:
                result[name] = torch.load(path)
                if len(result[name]) == len(store):
                    continue
            except (OSError, RuntimeError, EOFError):
                pass
            model = model or load_model(model_path)
            tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
            result[name] = compute_log_probs(model, store, batch_size, f"log-probs {name}")
            torch.save(result[name], tmp)
            os.replace(tmp, path)
    return result


def batches(log_probs: list, size: int):
    import torch

    for start in range(0, len(log_probs), size):
        chunk = log_probs[start : start + size]
        lengths = torch.tensor([len(x) for x in chunk])
        yield start, torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True), lengths


def decode_all(decoder, log_probs: list, batch_size: int, description: str) -> list[list[int]]:
    from pipeline.progress import progress_bar

    hypotheses: list[list[int]] = []
    with progress_bar() as bar:
        task = bar.add_task(description, total=len(log_probs))
        for _, padded, lengths in batches(log_probs, batch_size):
            hypotheses.extend(decoder.decode(padded, lengths))
            bar.advance(task, len(lengths))
    return hypotheses


def final_beams(log_probs: list, params: dict, batch_size: int) -> list[list[list[int]]]:
    """Our search's whole final beam per utterance, best first (for the oracle figure)."""
    from pipeline.decoding.ctc import prefix_beam_search_nbest

    beams: list[list[list[int]]] = []
    for _, padded, lengths in batches(log_probs, batch_size):
        nbest, _ = prefix_beam_search_nbest(padded, lengths, params["beam"], 0, params["prune_top_k"] or None)
        beams.extend(hypotheses or [[]] for hypotheses in nbest)
    return beams


def oracle_levenshtein(beams: list[list[list[int]]], refs: list[str], char_map: list[str]) -> float:
    """Mean distance of the closest hypothesis in the final beam: how much a better ranking could still gain."""
    import Levenshtein

    best = [min(Levenshtein.distance(ref, to_text(h, char_map)) for h in hypotheses)
            for ref, hypotheses in zip(refs, beams)]
    return sum(best) / max(1, len(best))


def to_text(tokens: list[int], char_map: list[str]) -> str:
    return "".join(char_map[t] for t in tokens)


def run(run: StageRun) -> dict:
    from pipeline.data.store import FeatureStore
    from pipeline.decoding.ctc import make_decoder
    from pipeline.decoding.metrics import levenshtein_mean

    normalized = run.inputs["normalize"].dir
    stores = {name: FeatureStore.open(normalized / name) for name in ("dev", "test")}
    select = run.inputs["select"]
    cache = run.artifacts_root / run.profile.name / "logprobs" / select.key[:16]
    batch_size = run.params["batch_size"]
    log_probs = cached_log_probs(cache, select.dir / "model.pt", stores, batch_size)
    num_classes = int(log_probs["dev"][0].shape[-1])
    workers = int(run.options.get("workers") or 1)
    greedy = make_decoder("greedy", beam=1, blank=0, num_classes=num_classes)
    pruning = {"prune_top_k": run.params["prune_top_k"]} if run.params["prune_top_k"] else {}
    try:
        beam = make_decoder(run.params["backend"], beam=run.params["beam"], blank=0, num_classes=num_classes,
                            workers=workers, **pruning)
    except ValueError as exc:
        raise EngineError(f"decode.backend={run.params['backend']}: {exc}") from None

    char_map = run.profile.char_map
    dev = stores["dev"]
    refs = [to_text(dev.labels(i).tolist(), char_map) for i in range(len(dev))]
    dev_greedy = decode_all(greedy, log_probs["dev"], batch_size, "greedy dev")
    started = time.perf_counter()
    dev_beams = final_beams(log_probs["dev"], run.params, batch_size)
    if run.params["backend"] == "asrpipe":  # the final beam's first entry is our answer: no second search
        dev_beam = [hypotheses[0] for hypotheses in dev_beams]
    else:
        started = time.perf_counter()
        dev_beam = decode_all(beam, log_probs["dev"], batch_size, f"beam {run.params['beam']} dev")
    dev_seconds = time.perf_counter() - started
    test_beam = decode_all(beam, log_probs["test"], batch_size, f"beam {run.params['beam']} test")

    metrics = {
        "dev_greedy": levenshtein_mean(refs, [to_text(h, char_map) for h in dev_greedy]),
        "dev_beam": levenshtein_mean(refs, [to_text(h, char_map) for h in dev_beam]),
        "dev_utterances_per_s": round(len(dev) / max(dev_seconds, 1e-9), 2),
        "test_utterances": len(test_beam),
    }
    metrics["dev_oracle"] = oracle_levenshtein(dev_beams, refs, char_map)
    write_json_atomic(run.out / "dev_results.json", {
        "ids": dev.ids, "reference": refs, "greedy": [to_text(h, char_map) for h in dev_greedy],
        "beam": [to_text(h, char_map) for h in dev_beam]})
    write_json_atomic(run.out / "test_hypotheses.json", {"ids": stores["test"].ids, "tokens": test_beam})
    run.log(f"dev Levenshtein: greedy {metrics['dev_greedy']:.3f}  beam {metrics['dev_beam']:.3f}")
    return metrics


STAGE = Stage(name="decode", upstream=("normalize", "select"), code=("pipeline.stages.decode_ctc", "pipeline.decoding.ctc", "pipeline.decoding.ctc_backends",
                    "pipeline.decoding.ctc_beam", "pipeline.decoding.ctc_greedy", "pipeline.decoding.metrics"),
              params=params, label=label, run=run)
