"""decode (hw3p2): CTC decoding of dev and test with the selected model.

The model's log-probs are cached per selected checkpoint (`artifacts/<competition>/logprobs/<select-key>/`), so
another beam width or backend costs no network pass. Dev gets greedy, beam and oracle (best of the final beam)
Levenshtein side by side in the manifest; a held-out store (unseen speakers) gets greedy and beam. Outputs:
`test_hypotheses.json`, `dev_results.json` (and `heldout_results.json`).

`decode.ensemble_runs` adds other train runs (pipeline/decoding/ensemble.py): their probabilities are averaged with
this run's before the search, and the manifest lists each member's own dev figures next to the ensemble's.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.engine import EngineError, Stage, StageRun
from pipeline.files import torch_save_atomic, write_json_atomic
from pipeline.tasks.profiles import Profile


def params(profile: Profile, recipe: dict) -> dict:
    from pipeline.decoding.ensemble import ensemble_params

    decode = recipe["decode"]
    chosen = {"beam": decode["beam"], "backend": decode["backend"], "cutoff_top_n": decode["cutoff_top_n"],
              "batch_size": decode["batch_size"]}
    if decode["lm_order"]:  # absent without an LM, so existing keys stay put
        chosen.update(lm_order=decode["lm_order"], alpha=decode["alpha"], beta=decode["beta"])
    return {**chosen, **ensemble_params(profile, recipe)}


def label(params: dict) -> str:
    ensemble = f"-ens{len(params['ensemble_runs']) + 1}" if params.get("ensemble_runs") else ""
    lm = f"-lm{params['lm_order']}a{params['alpha']:g}b{params['beta']:g}" if params.get("lm_order") else ""
    return f"beam{params['beam']}-{params['backend']}{ensemble}{lm}"


def estimate_lm(normalized: Path, num_classes: int, order: int):
    """The n-gram over the output symbols, from the training transcripts (train store labels)."""
    from pipeline.data.store import FeatureStore
    from pipeline.decoding.ngram import NgramLM

    train = FeatureStore.open(normalized / "train")
    return NgramLM.estimate((train.labels(i) for i in range(len(train))), num_classes, order)


def compute_log_probs(model, store, batch_size: int, description: str):
    """Per-utterance (T', C) float32 CPU log-probs in store order, batched by length for little padding; the
    model runs on its own device (inputs go there, outputs come back)."""
    import torch

    from pipeline.decoding.batches import length_batches, model_device, pad_batch, scatter
    from pipeline.progress import progress_bar

    device = model_device(model)
    batches = length_batches(store.lengths, batch_size)
    results = []
    with torch.inference_mode(), progress_bar() as bar:
        task = bar.add_task(description, total=len(store))
        for batch in batches:
            log_probs, out_lengths = model(*pad_batch([store.features(i) for i in batch], device))
            log_probs, out_lengths = log_probs.float().cpu(), out_lengths.cpu()
            results.append([log_probs[row, : out_lengths[row]].clone() for row in range(len(batch))])
            bar.advance(task, len(batch))
    return scatter(batches, results, len(store))


def cached_log_probs(cache: Path, model_path, stores: dict, batch_size: int, device=None,
                     computed: list | None = None) -> dict:
    """Load or compute each partition's log-probs (the model on `device`); one process at a time per cache
    (decodes of several beams may run at once), and an unreadable cache file is recomputed rather than trusted.
    The names of the partitions computed (not read from the cache) are appended to `computed`."""
    import fcntl

    import torch

    from pipeline.models.load import load_model

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
            model = model or load_model(model_path() if callable(model_path) else model_path, device)
            result[name] = compute_log_probs(model, store, batch_size, f"log-probs {name}")
            torch_save_atomic(result[name], path)
            if computed is not None:
                computed.append(name)
    return result


# The search's cost is mostly per frame of a batch, not per utterance (ctc_backends.FRAME_COST_IN_ROWS): decode
# many utterances per call, within a memory budget (back-pointers are frames x utterances x beam).
SEARCH_FRAMES = 400_000
SEARCH_CELLS = 8_000_000


def batches(log_probs: list, beam: int, device=None) -> tuple[list[list[int]], "Iterator"]:
    """Length-sorted index batches within the search's memory budget, and a lazy iterator of their (padded (B, T',
    C), lengths) built from the cached CPU log-probs, moved to `device` when it is CUDA (the search then runs there;
    on CPU in worker processes)."""
    import torch

    from pipeline.decoding.batches import length_batches

    budget = max(1, min(SEARCH_FRAMES, SEARCH_CELLS // beam))
    index_batches = length_batches([len(x) for x in log_probs], max_frames=budget)

    def padded():
        for indices in index_batches:
            chunk = [log_probs[i] for i in indices]
            lengths = torch.tensor([len(x) for x in chunk])
            tensor = torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True)
            if device is not None and torch.device(device).type == "cuda":
                tensor, lengths = tensor.to(device), lengths.to(device)
            yield tensor, lengths

    return index_batches, padded()


def decode_all(decoder, log_probs: list, description: str, device=None) -> list[list[int]]:
    return _over_batches(decoder.decode_batches, log_probs, description, device, lambda answers: answers,
                         decoder.beam)


def final_beams(decoder, log_probs: list, description: str, device=None) -> list[list[list[int]]]:
    """Our search's whole final beam per utterance, best first (for the oracle figure)."""
    return _over_batches(decoder.search_batches, log_probs, description, device,
                         lambda result: [hypotheses or [[]] for hypotheses in result.tokens], decoder.beam)


def _over_batches(run_batches, log_probs: list, description: str, device, per_batch, beam: int) -> list:
    from pipeline.decoding.batches import scatter
    from pipeline.progress import progress_bar

    index_batches, padded = batches(log_probs, beam, device)
    results = []
    with progress_bar() as bar:
        task = bar.add_task(description, total=len(log_probs))
        for indices, result in zip(index_batches, run_batches(padded)):
            results.append(per_batch(result))
            bar.advance(task, len(indices))
    return scatter(index_batches, results, len(log_probs))


def oracle_levenshtein(beams: list[list[list[int]]], refs: list[str], char_map: list[str]) -> float:
    """Mean distance of the closest hypothesis in the final beam: how much a better ranking could still gain."""
    import Levenshtein

    best = [min(Levenshtein.distance(ref, to_text(h, char_map)) for h in hypotheses)
            for ref, hypotheses in zip(refs, beams)]
    return sum(best) / max(1, len(best))


def to_text(tokens: list[int], char_map: list[str]) -> str:
    return "".join(char_map[t] for t in tokens)


def references(store, char_map: list[str]) -> list[str]:
    return [to_text(store.labels(i).tolist(), char_map) for i in range(len(store))]


def model_log_probs(run: StageRun, stores: dict, device) -> tuple[dict, list[tuple[str, dict]], list[str]]:
    """The log-probs to decode (the selected model's, or the ensemble's average), [(train key, log-probs)] of
    every model (the pipeline's own first; each cached in logprobs/<its select key>/, shared with that run's own
    decodes; the model is loaded only when its cache misses), and the partitions whose
    log-probs were computed for the pipeline's own model (not read from its cache)."""
    from pipeline.decoding.ensemble import mean_log_probs, member_models

    logprobs_root = run.artifacts_root / run.profile.name / "logprobs"
    select = run.inputs["select"]
    models = [(run.keys["train"], select.key, select.dir / "model.pt"), *member_models(run)]
    members, computed = [], []  # computed: per model, the partitions not read from its cache
    for key, select_key, model in models:
        cache = logprobs_root / select_key[:16]
        computed.append([])
        members.append((key, cached_log_probs(cache, model, stores, run.params["batch_size"], device, computed[-1])))
        run.log(f"log-probs of {key[:8]} on {device}: computed {', '.join(computed[-1])}" if computed[-1] else
                f"log-probs of {key[:8]} read from the cache {cache} (no model run)")
    if len(members) == 1:
        return members[0][1], members, computed[0]
    names = [key for key, _ in members]
    average = {name: mean_log_probs([member[name] for _, member in members], names) for name in stores}
    return average, members, computed[0]


def run(run: StageRun) -> dict:
    from pipeline.data.store import decode_stores
    from pipeline.decoding.ctc import make_decoder
    from pipeline.decoding.metrics import levenshtein_mean
    from pipeline.device import resolve_device

    device = resolve_device(run.options.get("device"))  # first: a device we cannot use fails before any work
    normalized = run.inputs["normalize"].dir
    stores = decode_stores(normalized)
    log_probs, members, computed = model_log_probs(run, stores, device)
    num_classes = int(log_probs["dev"][0].shape[-1])
    workers = int(run.options.get("workers") or 1)
    greedy = make_decoder("greedy", beam=1, blank=0, num_classes=num_classes)
    pruning = {"cutoff_top_n": run.params["cutoff_top_n"]} if run.params["cutoff_top_n"] else {}
    if run.params.get("lm_order"):
        pruning.update(lm=estimate_lm(normalized, num_classes, run.params["lm_order"]), alpha=run.params["alpha"],
                       beta=run.params["beta"])
        run.log(f"LM: order {run.params['lm_order']} over {num_classes - 1} symbols from the training transcripts, "
                f"alpha {run.params['alpha']}, beta {run.params['beta']}")
    try:
        beam = make_decoder(run.params["backend"], beam=run.params["beam"], blank=0, num_classes=num_classes,
                            workers=workers, **pruning)
    except ValueError as exc:
        raise EngineError(f"decode.backend={run.params['backend']}: {exc}") from None

    char_map = run.profile.char_map
    dev = stores["dev"]
    refs = references(dev, char_map)
    dev_greedy = decode_all(greedy, log_probs["dev"], "greedy dev", device)
    ours = beam if run.params["backend"] == "asrpipe" else make_decoder(
        "asrpipe", beam=run.params["beam"], blank=0, num_classes=num_classes, workers=workers, **pruning)
    started = time.perf_counter()
    dev_beams = final_beams(ours, log_probs["dev"], f"beam {run.params['beam']} dev (final beams)", device)
    if run.params["backend"] == "asrpipe":  # the final beam's first entry is our answer: no second search
        dev_beam = [hypotheses[0] for hypotheses in dev_beams]
    else:
        started = time.perf_counter()
        dev_beam = decode_all(beam, log_probs["dev"], f"beam {run.params['beam']} dev", device)
    dev_seconds = time.perf_counter() - started
    test_beam = decode_all(beam, log_probs["test"], f"beam {run.params['beam']} test", device)

    def distance(hypotheses: list[list[int]], truth: list[str] = refs) -> float:
        return levenshtein_mean(truth, [to_text(h, char_map) for h in hypotheses])

    metrics = {
        "dev_greedy": distance(dev_greedy),
        "dev_beam": distance(dev_beam),
        "dev_utterances_per_s": round(len(dev) / max(dev_seconds, 1e-9), 2),
        "test_utterances": len(test_beam),
    }
    metrics["dev_oracle"] = oracle_levenshtein(dev_beams, refs, char_map)
    if "heldout" in stores:  # unseen speakers: the figure a recipe change is judged on
        heldout_refs = references(stores["heldout"], char_map)
        heldout = {"greedy": decode_all(greedy, log_probs["heldout"], "greedy heldout", device),
                   "beam": decode_all(beam, log_probs["heldout"], f"beam {run.params['beam']} heldout", device)}
        metrics.update({f"heldout_{kind}": distance(hyps, heldout_refs) for kind, hyps in heldout.items()})
        write_json_atomic(run.out / "heldout_results.json", {
            "ids": stores["heldout"].ids, "reference": heldout_refs,
            **{kind: [to_text(h, char_map) for h in hyps] for kind, hyps in heldout.items()}})
    if len(members) > 1:  # each member alone, for the ensemble's gain
        metrics["members"] = [
            {"train_key": key[:8],
             "dev_greedy": distance(decode_all(greedy, member["dev"], f"greedy dev {key[:8]}", device)),
             "dev_beam": distance(decode_all(beam, member["dev"], f"beam {run.params['beam']} dev {key[:8]}", device)),
             **({"heldout_beam": distance(decode_all(beam, member["heldout"], f"beam heldout {key[:8]}", device),
                                          heldout_refs)} if "heldout" in stores else {})}
            for key, member in members]
    metrics["device"] = str(device)
    metrics["logprobs_computed"] = computed  # partitions whose log-probs this run computed (others: the cache)
    write_json_atomic(run.out / "dev_results.json", {
        "ids": dev.ids, "reference": refs, "greedy": [to_text(h, char_map) for h in dev_greedy],
        "beam": [to_text(h, char_map) for h in dev_beam]})
    write_json_atomic(run.out / "test_hypotheses.json", {"ids": stores["test"].ids, "tokens": test_beam})
    run.log(f"dev Levenshtein: greedy {metrics['dev_greedy']:.3f}  beam {metrics['dev_beam']:.3f}"
            + (f"; held-out speakers: greedy {metrics['heldout_greedy']:.3f}  beam {metrics['heldout_beam']:.3f}"
               if "heldout" in stores else ""))
    return metrics


STAGE = Stage(name="decode", upstream=("normalize", "select"), params=params, label=label, run=run)
