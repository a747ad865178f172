"""Tiny replicas of any competition profile in its Kaggle layout (random features, random transcripts), for tests.

A replica follows the profile: feature folder, dim and orientation ((T,F) or (F,T)), transcript folder and
start/end markers (or bare text), label vocabulary, partition names, S22 test_order.csv (shuffled, so sorted order
would be wrong), the sample submission's name, place, header and label format (int ids / phoneme strings / single
characters / text), all zipped under the name Kaggle serves (`<slug>.zip`). `**variant` writes the data with other
values than the profile declares (e.g. `feature_layout="TF"`, `label_format="int"`) to exercise detection.
"""
from __future__ import annotations

import csv
import dataclasses
import zipfile
from pathlib import Path

import numpy as np

from pipeline.tasks.profiles import PROFILES, Profile

# where a sample submission sits inside the data root when it is not next to it (formats doc §2.1)
SAMPLE_FOLDER = {"hw3p2-f22": "test-clean/transcript", "hw3p2-s24": "test-clean"}
# S22 hw1p2's test_order.csv sits at the data root; hw3p2/hw4p2 keep it in test/ (NB-S22-1, NB-S22-3, NB-S22-4)
TEST_ORDER_FOLDER = {"hw1p2": "", "hw3p2": "test", "hw4p2": "test"}


def vocabulary(profile: Profile) -> list[str]:
    """Symbols a transcript may contain (never blank, markers, pad or other bracketed specials)."""
    if profile.family == "hw4p2":
        return [s for s in profile.symbols if len(s) == 1 and s != "\n"]
    return [s for s in profile.symbols if s and not (len(s) > 1 and s[0] in "<[" and s[-1] in ">]" and s != "[SIL]")]


def write_partition(root: Path, name: str, profile: Profile, ids: list[str], rng, labelled: bool) -> list[list[str]]:
    transcripts = []
    (root / name / profile.feature_dir).mkdir(parents=True)
    if labelled:
        (root / name / profile.transcript_dir).mkdir(parents=True)
    vocab = vocabulary(profile)
    for utt in ids:
        frames = int(rng.integers(40, 90))
        features = rng.normal(3.0, 2.0, (frames, profile.feature_dim)).astype(np.float32)
        np.save(root / name / profile.feature_dir / f"{utt}.npy",
                features if profile.feature_layout == "TF" else features.T)
        n_tokens = frames if profile.family == "hw1p2" else int(rng.integers(3, 10))
        tokens = [str(t) for t in rng.choice(vocab, n_tokens)]
        transcripts.append(tokens)
        if labelled:
            wrapped = [profile.markers[0], *tokens, profile.markers[1]] if profile.markers else tokens
            np.save(root / name / profile.transcript_dir / f"{utt}.npy", np.array(wrapped))
    return transcripts


def submission_rows(profile: Profile, tokens_per_utt: list[list[str]]) -> tuple[list[str], list[str]]:
    """(sample labels, true labels), one per CSV row: per frame for hw1p2, per utterance otherwise."""
    if profile.family == "hw1p2":
        frames = [t for tokens in tokens_per_utt for t in tokens]
        as_label = (lambda t: str(profile.symbols.index(t))) if profile.label_format == "int" else str
        return [as_label(profile.symbols[0])] * len(frames), [as_label(t) for t in frames]
    if profile.family == "hw3p2":
        chars = profile.char_map
        truth = ["".join(chars[profile.symbols.index(t)] for t in tokens) for tokens in tokens_per_utt]
        return [chars[1] * 3] * len(truth), truth
    truth = ["".join(tokens) for tokens in tokens_per_utt]
    return ["A"] * len(truth), truth


def make_replica(base: Path, name: str = "demo-hw3p2", n_train: int = 12, n_dev: int = 4, n_test: int = 5,
                 seed: int = 0, test_order_header: bool | None = None, **variant) -> Profile:
    """Write `<base>/<name>/<slug>.zip` + solution.csv and return the profile pointing at them (a real profile
    also gets `local_data` = the zip, as `asrpipe download --data <zip>` would give it)."""
    declared = PROFILES[name]
    profile = dataclasses.replace(declared, embedded_dir=base / name)
    written = dataclasses.replace(profile, **variant)
    rng = np.random.default_rng(seed)
    staging = base / f"staging-{name}"
    top = staging / (written.data_name or f"11785-{name}")
    counts = dict(zip(written.partitions, (n_train, n_dev, n_test)))
    truth = {}
    for p_index, (partition, count) in enumerate(counts.items()):
        ids = sorted(f"{100 + p_index}-{2000 + i}-{i:04d}" for i in range(count))
        truth[partition] = (ids, write_partition(top, partition, written, ids, rng, partition != written.partitions[2]))
    test_ids, test_tokens = truth[written.partitions[2]]
    if written.test_order:
        order = [int(i) for i in rng.permutation(len(test_ids))]
        test_ids, test_tokens = [test_ids[i] for i in order], [test_tokens[i] for i in order]
        header = (written.family != "hw1p2") if test_order_header is None else test_order_header
        with open(top / TEST_ORDER_FOLDER[written.family] / written.test_order, "w", newline="") as handle:
            writer = csv.writer(handle)
            if header:
                writer.writerow(["file"])
            writer.writerows([f"{utt}.npy"] for utt in test_ids)
    sample_labels, true_labels = submission_rows(written, test_tokens)
    folder = SAMPLE_FOLDER.get(name)
    sample = (top / folder if folder else staging) / written.sample_submission
    sample.parent.mkdir(parents=True, exist_ok=True)
    solution = profile.embedded_solution
    solution.parent.mkdir(parents=True, exist_ok=True)
    with open(sample, "w", newline="") as s_handle, open(solution, "w", newline="") as sol_handle:
        s_writer, sol_writer = csv.writer(s_handle), csv.writer(sol_handle)
        s_writer.writerow(written.csv_columns)
        sol_writer.writerow([*written.csv_columns, "Usage"])
        for i, (sample_label, label) in enumerate(zip(sample_labels, true_labels)):
            s_writer.writerow([i, sample_label])
            sol_writer.writerow([i, label, "Public" if i % 2 == 0 else "Private"])
    with zipfile.ZipFile(profile.embedded_zip, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(staging))
    return profile if profile.demo else dataclasses.replace(profile, local_data=profile.embedded_zip)
