"""Tiny replicas of a competition in its Kaggle layout (random features, random transcripts), for tests."""
from __future__ import annotations

import csv
import dataclasses
import zipfile
from pathlib import Path

import numpy as np

from pipeline.tasks.profiles import PROFILES, Profile


def write_partition(root: Path, name: str, profile: Profile, ids: list[str], rng, labelled: bool) -> list[list[str]]:
    transcripts = []
    (root / name / profile.feature_dir).mkdir(parents=True)
    if labelled:
        (root / name / profile.transcript_dir).mkdir(parents=True)
    vocab = [s for s in profile.symbols if s and not s.startswith("<")]
    for utt in ids:
        frames = int(rng.integers(40, 90))
        np.save(root / name / profile.feature_dir / f"{utt}.npy", rng.normal(3.0, 2.0, (frames, profile.feature_dim)).astype(np.float32))
        n_tokens = frames if profile.family == "hw1p2" else int(rng.integers(3, 10))
        tokens = [str(t) for t in rng.choice(vocab, n_tokens)]
        transcripts.append(tokens)
        if labelled:
            np.save(root / name / profile.transcript_dir / f"{utt}.npy",
                    np.array([profile.markers[0], *tokens, profile.markers[1]]))
    return transcripts


def make_replica(base: Path, name: str = "demo-hw3p2", n_train: int = 12, n_dev: int = 4, n_test: int = 5,
                 seed: int = 0) -> Profile:
    """Write `<base>/<name>/<name>.zip` + solution.csv and return a profile pointing at them."""
    profile = dataclasses.replace(PROFILES[name], embedded_dir=base / name)
    rng = np.random.default_rng(seed)
    staging = base / "staging" / f"11785-{name}"
    counts = {"train-clean-100": n_train, "dev-clean": n_dev, "test-clean": n_test}
    truth = {}
    for p_index, (partition, count) in enumerate(counts.items()):
        ids = sorted(f"{100 + p_index}-{2000 + i}-{i:04d}" for i in range(count))
        truth[partition] = (ids, write_partition(staging, partition, profile, ids, rng, partition != "test-clean"))
    test_ids, test_tokens = truth["test-clean"]
    id_col, label_col = profile.csv_columns
    sample = staging.parent / "sample_submission.csv"
    solution = base / name / "solution.csv"
    solution.parent.mkdir(parents=True, exist_ok=True)
    with open(sample, "w", newline="") as s_handle, open(solution, "w", newline="") as sol_handle:
        s_writer, sol_writer = csv.writer(s_handle), csv.writer(sol_handle)
        s_writer.writerow([id_col, label_col])
        sol_writer.writerow([id_col, label_col, "Usage"])
        for i, tokens in enumerate(test_tokens):
            s_writer.writerow([i, profile.char_map[1] * 3 if profile.char_map else tokens[0]])
            label = "".join(profile.char_map[profile.symbols.index(t)] for t in tokens) if profile.char_map else tokens[0]
            sol_writer.writerow([i, label, "Public" if i % 2 == 0 else "Private"])
    with zipfile.ZipFile(profile.embedded_zip, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(staging.parent.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(staging.parent))
    return profile
