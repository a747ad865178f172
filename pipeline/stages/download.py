"""download: put the competition's data into artifacts, verified and unzipped atomically.

Embedded demo competitions copy their zip from the package; real ones download it through the kaggle client
(`source: kaggle`, pipeline/kaggle_client.py) or read data fetched outside asrpipe (`--data`, `source: local`).
Outputs: `<slug>.zip`, `data/` (the unzipped archive). Metrics: data_root (relative), per-partition counts.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

from pipeline.data.kaggle_layout import DataError, describe, detect_layout, differences, list_partition, read_test_order
from pipeline.engine import Stage, StageRun
from pipeline.files import atomic_write, sha256_file, write_json_atomic
from pipeline.tasks.profiles import Profile


def params(profile: Profile, recipe: dict) -> dict:
    if profile.local_data is not None:  # `--data PATH`: a zip or folder fetched outside asrpipe
        return local_params(profile)
    if not profile.demo:
        return kaggle_params(profile)
    if not profile.embedded_zip.exists():
        raise DataError(f"{profile.embedded_zip}: embedded demo archive missing from the installation")
    return {"slug": profile.slug, "source": "embedded", "sha256": sha256_file(profile.embedded_zip),
            "layout": {"partitions": list(profile.partitions), "feature_dir": profile.feature_dir,
                       "transcript_dir": profile.transcript_dir, "sample_submission": profile.sample_submission}}


def label(params: dict) -> str:
    return params["source"]


def kaggle_params(profile: Profile) -> dict:
    if not profile.slug:
        raise DataError(f"{profile.name}: no known Kaggle slug; download the data in a browser and pass "
                        f"--data PATH (the zip or an unpacked folder)")
    return {"slug": profile.slug, "source": "kaggle",
            "layout": {"partitions": list(profile.partitions), "feature_dir": profile.feature_dir,
                       "transcript_dir": profile.transcript_dir, "sample_submission": profile.sample_submission}}


def fetch_from_kaggle(run: StageRun) -> dict:
    """The competition zip through the kaggle client (pipeline/kaggle_client.py): resumed from `<slug>.zip.part`
    when interrupted (this stage is resumable), skipped when complete, verified before it gets its final name."""
    from pipeline.kaggle_client import Kaggle

    archive = run.out / f"{run.profile.slug}.zip"
    fetched = Kaggle(log=run.log, progress=run.options.get("progress", True)).download(run.profile.slug, archive)
    run.log(f"{archive.name}: {fetched['size']:,} bytes, sha256 {fetched['sha256'][:12]}…"
            + (" (resumed)" if fetched.get("resumed") else ""))
    return {"kind": "kaggle", "sha256": fetched["sha256"], "size": fetched["size"]}


def copy_verified(source: Path, target: Path, expected_sha256: str) -> None:
    def copy(tmp: Path) -> None:
        shutil.copyfile(source, tmp)
        actual = sha256_file(tmp)
        if actual != expected_sha256:
            raise DataError(f"{source}: sha256 {actual[:12]}… differs from the expected {expected_sha256[:12]}…")

    atomic_write(target, copy)


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


LOCAL_DATA_FILE = "local_data.json"   # artifacts/<competition>/local_data.json: where `--data` pointed last


KAGGLE = "kaggle"   # `--data kaggle`: forget the remembered --data, download from Kaggle (demo: the embedded zip)


def with_local_data(profile: Profile, data: Path | str | None, artifacts_root: Path) -> Profile:
    """The profile reading its data from `data` (a Kaggle zip fetched by browser, or an unpacked folder such as
    /kaggle/input/<slug>). The choice is remembered per competition, so later commands need no `--data`; only an
    explicit `data` writes it (a remembered one is just read). `data == "kaggle"` forgets it: the data comes from
    Kaggle again (the embedded zip for demo competitions); a folder named kaggle is `./kaggle`."""
    remembered = Path(artifacts_root) / profile.name / LOCAL_DATA_FILE
    if isinstance(data, str) and data == KAGGLE:
        if not profile.demo and not profile.slug:
            raise DataError(f"{profile.name}: no known Kaggle slug, so --data kaggle has nothing to download; "
                            f"download the data in a browser and pass --data PATH")
        remembered.unlink(missing_ok=True)
        return dataclasses.replace(profile, local_data=None)
    if data is None:
        if not remembered.exists():
            return profile
        data = Path(json.loads(remembered.read_text())["path"])
        if not data.exists():
            raise DataError(f"{data}: gone (remembered in {remembered} from an earlier --data; give --data again, "
                            f"or --data kaggle to download it)")
        return dataclasses.replace(profile, local_data=data)  # read-only commands (status) must write nothing
    data = Path(data).expanduser().resolve()
    if not data.exists():
        raise DataError(f"--data {data}: no such file or folder")
    if data.is_file() and not zipfile.is_zipfile(data):
        raise DataError(f"--data {data}: not a zip archive (expected the competition zip or an unpacked folder)")
    remembered.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(remembered, {"path": str(data)}, indent=None, fsync=False)
    return dataclasses.replace(profile, local_data=data)


def data_source(profile: Profile) -> str:
    """Where the download stage takes the data from, in a few words (`asrpipe status`)."""
    if profile.local_data is not None:
        kind = "zip" if Path(profile.local_data).is_file() else "folder"
        return f"local {kind} {profile.local_data} (remembered from --data)"
    if profile.demo:
        return f"embedded demo zip {profile.embedded_zip}"
    return f"Kaggle {profile.slug}" if profile.slug else "none: no known Kaggle slug (give --data PATH)"


def local_fingerprint(source: Path) -> str:
    """Cheap identity of local data (sizes and modification times, not contents: a zip is gigabytes)."""
    digest = hashlib.sha256()
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(source) if path != source else path.name}|{stat.st_size}|"
                      f"{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def local_params(profile: Profile) -> dict:
    source = Path(profile.local_data)
    if not source.exists():
        raise DataError(f"--data {source}: no such file or folder")
    return {"slug": profile.slug, "source": "local", "path": str(source), "fingerprint": local_fingerprint(source),
            "layout": {"partitions": list(profile.partitions), "feature_dir": profile.feature_dir,
                       "transcript_dir": profile.transcript_dir, "sample_submission": profile.sample_submission}}


def use_local_data(source: Path, target: Path, fingerprint: str | None = None) -> dict:
    """Put local data at `target`: a zip is unzipped atomically (its sha256 recorded), a folder is linked (never
    copied: /kaggle/input is read-only and large). Refuses data that changed since the stage was planned."""
    if fingerprint is not None and local_fingerprint(source) != fingerprint:
        raise DataError(f"{source}: changed since this run was planned (rerun the command)")
    if source.is_file():
        unzip_atomically(source, target)
        return {"kind": "zip", "source_path": str(source), "sha256": sha256_file(source)}
    tmp = target.with_name(target.name + ".link")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(source, tmp, target_is_directory=True)
    if target.is_symlink():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return {"kind": "folder", "source_path": str(source)}


def verify_layout(data: Path, profile: Profile) -> tuple[Path, dict]:
    """Detect the layout facts from the data (see kaggle_layout.detect_layout), check every partition against
    them, and return (root, facts): counts, sample_submission / test_order paths relative to data's parent, and
    declared / detected / differences / evidence / summary (one line) for the manifest."""
    root, detected, evidence = detect_layout(data, profile)
    actual = profile.reconciled(detected)
    train, dev, test = profile.partitions
    order = read_test_order(evidence["test_order"])[0] if "test_order" in evidence else None
    counts = {name: len(list_partition(root, name, actual, labelled=(name != test),
                                       order=order if name == test else None).feature_files)
              for name in (train, dev, test)}
    diffs = differences(profile, detected)
    relative = {key: str(path.relative_to(data.parent)) for key, path in evidence.items()}
    return root, {"counts": counts, "sample_submission": relative["sample_submission"],
                  "test_order": relative.get("test_order"), "declared": profile.declared(), "detected": detected,
                  "differences": diffs, "evidence": relative, "summary": describe(detected, diffs)}


def run(run: StageRun) -> dict:
    if run.params["source"] == "local":
        facts = use_local_data(Path(run.params["path"]), run.out / "data", run.params["fingerprint"])
        root, layout = verify_layout(run.out / "data", run.profile)
        run.log(f"{facts['kind']} {run.params['path']}: partitions {layout['counts']}")
        run.log(layout["summary"])
        return {"data_root": str(root.relative_to(run.out)), **facts, **layout}
    archive = run.out / f"{run.profile.slug}.zip"
    fetched = {}
    if run.params["source"] == "kaggle":
        fetched = fetch_from_kaggle(run)
    elif not archive.exists():
        copy_verified(run.profile.embedded_zip, archive, run.params["sha256"])
    unzip_atomically(archive, run.out / "data")
    root, facts = verify_layout(run.out / "data", run.profile)
    run.log(f"partitions: {facts['counts']}")
    run.log(facts["summary"])
    return {"data_root": str(root.relative_to(run.out)), **fetched, **facts}


# resumable: an interrupted Kaggle download keeps its `.part` (and a complete zip) for the next attempt
STAGE = Stage(name="download", upstream=(), params=params, label=label, run=run, resumable=True)
