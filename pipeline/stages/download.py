"""download: put the competition's data into artifacts, verified and unzipped atomically.

Embedded demo competitions copy their zip from the package; real Kaggle download plugs in here (`source: kaggle`).
Outputs: `<slug>.zip`, `data/` (the unzipped archive). Metrics: data_root (relative), per-partition counts.
"""
from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

from pipeline.data.kaggle_layout import DataError, find_data_root, list_partition
from pipeline.engine import Stage, StageRun, sha256_file
from pipeline.tasks.profiles import Profile


def params(profile: Profile, recipe: dict) -> dict:
    if not profile.demo:
        raise DataError(f"{profile.name}: Kaggle download is not available yet; only the embedded demo competitions")
    if not profile.embedded_zip.exists():
        raise DataError(f"{profile.embedded_zip}: embedded demo archive missing from the installation")
    return {"slug": profile.slug, "source": "embedded", "sha256": sha256_file(profile.embedded_zip),
            "layout": {"partitions": list(profile.partitions), "feature_dir": profile.feature_dir,
                       "transcript_dir": profile.transcript_dir, "sample_submission": profile.sample_submission}}


def label(params: dict) -> str:
    return params["source"]


def copy_verified(source: Path, target: Path, expected_sha256: str) -> None:
    tmp = target.with_name(target.name + ".part")
    shutil.copyfile(source, tmp)
    actual = sha256_file(tmp)
    if actual != expected_sha256:
        tmp.unlink()
        raise DataError(f"{source}: sha256 {actual[:12]}… differs from the expected {expected_sha256[:12]}…")
    os.replace(tmp, target)


def unzip_atomically(archive: Path, target: Path) -> None:
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as handle:
            broken = handle.testzip()
            if broken:
                raise DataError(f"{archive}: corrupt member {broken}")
            handle.extractall(tmp)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{archive}: not a valid zip archive ({exc})") from None
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def verify_layout(data: Path, profile: Profile) -> tuple[Path, dict]:
    root = find_data_root(data, profile)
    train, dev, test = profile.partitions
    counts = {name: len(list_partition(root, name, profile, labelled=(name != test)).feature_files)
              for name in (train, dev, test)}
    sample = next(iter(sorted(data.rglob(profile.sample_submission))), None)
    if sample is None:
        raise DataError(f"{data}: no {profile.sample_submission} in the archive")
    return root, {"counts": counts, "sample_submission": str(sample.relative_to(data.parent))}


def run(run: StageRun) -> dict:
    archive = run.out / f"{run.profile.slug}.zip"
    if not archive.exists():
        copy_verified(run.profile.embedded_zip, archive, run.params["sha256"])
    unzip_atomically(archive, run.out / "data")
    root, facts = verify_layout(run.out / "data", run.profile)
    run.log(f"partitions: {facts['counts']}")
    return {"data_root": str(root.relative_to(run.out)), **facts}


STAGE = Stage(name="download", upstream=(), code=("pipeline.stages.download", "pipeline.data.kaggle_layout"),
              params=params, label=label, run=run)
