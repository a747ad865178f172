"""Kaggle through the official client (`kaggle.api.KaggleApi`, kaggle 2.2.4), plus what that client leaves to us.

The client does not retry 429 / 5xx / connection resets on its RPCs, saves a zip cut short without complaint,
returns (does not raise) when a submission upload fails and prints to stdout instead of raising in places. This
module adds: retries with exponential backoff (Retry-After honoured), one actionable line per failure (401 token,
403 rules, 404 slug, rate limit, server/network), a resumable verified download with a Rich byte progress bar, and
submission polling. Credentials are whatever the client itself would use (KAGGLE_API_TOKEN, KAGGLE_USERNAME +
KAGGLE_KEY, kaggle.json in KAGGLE_CONFIG_DIR or ~/.kaggle); the key is never printed, logged or stored.

`ASRPIPE_KAGGLE_ENDPOINT=http://127.0.0.1:8123` sends every call to another Kaggle-compatible server (requests go
to `<endpoint>/api/v1/<service>/<Method>`): the tests' loopback stand-in, or a recording proxy.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import sys
import time
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Callable

from pipeline.errors import AsrpipeError
from pipeline.files import sha256_file, write_json_atomic

ENDPOINT_ENV = "ASRPIPE_KAGGLE_ENDPOINT"
TOKEN_URL = "https://www.kaggle.com/settings"          # "API" section: Create New Token
RETRYABLE_STATUS = {429, 500, 502, 503, 504}
CHUNK = 1 << 16                 # a cut-short transfer keeps everything up to the last whole chunk


class KaggleError(AsrpipeError, RuntimeError):
    """A Kaggle call that cannot succeed as asked: one line saying what to do."""


def competition_url(slug: str, page: str = "") -> str:
    return f"https://www.kaggle.com/competitions/{slug}" + (f"/{page}" if page else "")


# ---- credentials ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Credentials:
    """Where the client's credentials come from. The secret itself is never held here."""
    kind: str                 # token | key | oauth
    source: str               # KAGGLE_API_TOKEN, KAGGLE_USERNAME/KAGGLE_KEY, a kaggle.json path, ...
    username: str | None


def config_dir() -> Path:
    """The directory the kaggle client reads kaggle.json from (same rules as kaggle 2.2.4)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    home = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not home.exists():
        return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return home


def where_to_put_a_token() -> str:
    return (f"create an API token at {TOKEN_URL} (API → Create New Token) and save kaggle.json as "
            f"{config_dir() / 'kaggle.json'} (chmod 600), or export KAGGLE_API_TOKEN")


_warned: set[tuple[str, int]] = set()   # (path, mode): say it once per process, not once per Kaggle call site


def find_credentials(warn: Callable[[str], None]) -> Credentials:
    """The credentials the kaggle client will use, in its order; warns when kaggle.json is readable by others."""
    kaggle_json = config_dir() / "kaggle.json"
    if kaggle_json.exists() and os.name != "nt" and kaggle_json.stat().st_mode & 0o044 \
            and (str(kaggle_json), kaggle_json.stat().st_mode) not in _warned:
        _warned.add((str(kaggle_json), kaggle_json.stat().st_mode))
        warn(f"{kaggle_json} is readable by other users (mode {kaggle_json.stat().st_mode & 0o777:o}); "
             f"run: chmod 600 {kaggle_json}")
    if os.environ.get("KAGGLE_API_TOKEN"):
        return Credentials("token", "KAGGLE_API_TOKEN", None)
    for name in ("access_token", "access_token.txt"):
        path = Path.home() / ".kaggle" / name
        if path.is_file() and path.read_text().strip():
            return Credentials("token", str(path), None)
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return Credentials("key", "KAGGLE_USERNAME/KAGGLE_KEY", os.environ["KAGGLE_USERNAME"])
    if kaggle_json.exists():
        try:
            data = json.loads(kaggle_json.read_text())
        except (OSError, ValueError) as exc:
            raise KaggleError(f"{kaggle_json}: not readable as JSON ({exc.__class__.__name__}); expected "
                              f'{{"username": "...", "key": "..."}} as downloaded from {TOKEN_URL}') from None
        if not isinstance(data, dict) or not data.get("username") or not data.get("key"):
            raise KaggleError(f"{kaggle_json}: needs both \"username\" and \"key\" fields; {where_to_put_a_token()}")
        return Credentials("key", str(kaggle_json), str(data["username"]))
    if (Path.home() / ".kaggle" / "credentials.json").exists():
        return Credentials("oauth", str(Path.home() / ".kaggle" / "credentials.json"), None)
    raise KaggleError(f"no Kaggle credentials found: {where_to_put_a_token()}")


# ---- the official client, pointed at the configured endpoint --------------------------------------------------

@contextlib.contextmanager
def _quiet():
    """The client prints progress, warnings and help text to stdout; asrpipe reports for it."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


@functools.lru_cache(maxsize=None)
def _api_class():
    # `import kaggle` authenticates a module-level client at import time; with KAGGLE_API_TOKEN set that is a
    # network call to api.kaggle.com, whatever endpoint asrpipe was given. Hide the token for the import only.
    token = os.environ.pop("KAGGLE_API_TOKEN", None)
    try:
        with _quiet():
            from kaggle.api.kaggle_api_extended import KaggleApi
            from kagglesdk import KaggleEnv
    finally:
        if token is not None:
            os.environ["KAGGLE_API_TOKEN"] = token

    class AsrpipeKaggleApi(KaggleApi):
        endpoint: str | None = None

        def build_kaggle_client(self):
            client = super().build_kaggle_client()
            if self.endpoint:
                # kagglesdk only knows fixed hosts (LOCAL = http://localhost:80); non-PROD envs prefix /api.
                http = client.http_client()
                http._env, http._endpoint = KaggleEnv.LOCAL, self.endpoint
            return client

    return AsrpipeKaggleApi


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _transport_errors() -> tuple[type[BaseException], ...]:
    import requests
    import urllib3

    return (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, ConnectionError)


def _server_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    try:
        return str(response.json().get("message", "")).strip()[:200]
    except Exception:  # not JSON, no body: the status says enough
        return ""


# ---- the wrapper ----------------------------------------------------------------------------------------------

class Kaggle:
    """Competition calls with retries and one-line errors. `sleep`/`log` are injectable for tests."""

    ATTEMPTS = 5          # per call: delays 2, 4, 8, 16 s between them (or what Retry-After asks, up to 2 min)
    BACKOFF = 2.0
    POLL_FIRST = 3.0      # submission polling: 3 s, then ×1.5 up to 30 s between polls

    def __init__(self, *, endpoint: str | None = None, attempts: int | None = None, backoff: float | None = None,
                 max_delay: float = 60.0, log: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] | None = None, progress: bool = True):
        self.endpoint = (endpoint if endpoint is not None else os.environ.get(ENDPOINT_ENV, "")).rstrip("/") or None
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            raise KaggleError(f"{ENDPOINT_ENV}={self.endpoint!r}: expected a URL such as http://127.0.0.1:8123")
        self.attempts, self.backoff = attempts or self.ATTEMPTS, backoff if backoff is not None else self.BACKOFF
        self.max_delay = max_delay
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self.sleep, self.progress = sleep or time.sleep, progress
        self.credentials = find_credentials(lambda message: self.log(f"warning: {message}"))
        api = _api_class()()
        api.endpoint = self.endpoint
        api.args = [a for a in api.args if a not in ("--verbose", "-v")]  # verbose would print the auth header
        api.config_dir, api.config = str(config_dir()), str(config_dir() / "kaggle.json")
        self.api = api
        self._signed_in = False

    @property
    def where(self) -> str:
        return self.endpoint or "https://api.kaggle.com"

    # ---- calls and errors -------------------------------------------------------------------------------
    def _sign_in(self) -> None:
        if self._signed_in:
            return

        def authenticate() -> None:
            try:
                self.api.authenticate()
            except SystemExit:  # the client's "no credentials" path prints help and exits
                if self.credentials.kind == "token":
                    raise KaggleError(f"Kaggle did not accept the token in {self.credentials.source} (inactive or "
                                      f"expired): {where_to_put_a_token()}") from None
                raise KaggleError(f"no usable Kaggle credentials: {where_to_put_a_token()}") from None

        self._call("sign in", authenticate, slug=None)
        self._signed_in = True

    def _call(self, what: str, action: Callable, slug: str | None):
        """Run one client call; retry 429/5xx/connection failures with backoff, translate the rest."""
        transport = _transport_errors()
        started = time.monotonic()
        for attempt in range(1, self.attempts + 1):
            try:
                with _quiet():
                    return action()
            except transport as exc:
                status = _status(exc)
                if status is not None and status not in RETRYABLE_STATUS:
                    raise self._refusal(what, status, exc, slug) from None
                if attempt == self.attempts:
                    raise self._gave_up(what, status, exc, attempt, time.monotonic() - started) from None
                delay = self._delay(attempt, exc)
                reason = f"HTTP {status}" if status else exc.__class__.__name__
                self.log(f"{what}: {reason}; retrying in {delay:.1f} s (attempt {attempt}/{self.attempts})")
                self.sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, exc: BaseException) -> float:
        response = getattr(exc, "response", None)
        retry_after = response.headers.get("Retry-After") if response is not None else None
        if retry_after:
            try:
                return min(float(retry_after), 2 * self.max_delay)
            except ValueError:
                with contextlib.suppress(TypeError, ValueError):
                    wait = (parsedate_to_datetime(retry_after) - datetime.now(timezone.utc)).total_seconds()
                    return min(max(wait, 0.0), 2 * self.max_delay)
        return min(self.backoff * 2 ** (attempt - 1), self.max_delay)

    def _refusal(self, what: str, status: int, exc: BaseException, slug: str | None) -> KaggleError:
        if status == 401:
            return KaggleError(f"{what}: Kaggle rejected the credentials from {self.credentials.source} "
                               f"(401 Unauthorized); {where_to_put_a_token()}")
        if status == 403:
            account = f" as {self.credentials.username}" if self.credentials.username else ""
            target = competition_url(slug, "rules") if slug else "the competition's rules page"
            return KaggleError(f"{what}: Kaggle refused access (403 Forbidden); accept the competition rules at "
                               f"{target} while signed in{account}, then rerun")
        if status == 404:
            return KaggleError(f"{what}: Kaggle has no competition {slug!r} (404 Not Found); check the profile's "
                               f"slug (asrpipe competitions) against {competition_url(slug or '')}")
        detail = _server_message(exc)
        return KaggleError(f"{what}: Kaggle answered HTTP {status}" + (f" ({detail})" if detail else ""))

    def _gave_up(self, what: str, status: int | None, exc: BaseException, attempts: int,
                 seconds: float) -> KaggleError:
        if status == 429:
            return KaggleError(f"{what}: Kaggle rate limit (429 Too Many Requests) persisted through {attempts} "
                               f"attempts over {seconds:.0f} s; wait a few minutes and rerun")
        if status:
            return KaggleError(f"{what}: Kaggle server error (HTTP {status}) persisted through {attempts} attempts; "
                               f"try again later")
        return KaggleError(f"{what}: cannot reach Kaggle at {self.where} ({exc.__class__.__name__}) after "
                           f"{attempts} attempts; check the network or proxy")

    # ---- competition calls ------------------------------------------------------------------------------
    def list_files(self, slug: str) -> list[dict]:
        self._sign_in()
        response = self._call("list data files", lambda: self.api.competition_list_files(slug, page_size=200), slug)
        return [{"name": f.name, "size": f.total_bytes,
                 "created": f.creation_date.isoformat() if f.creation_date else ""} for f in response.files]

    def limits(self, slug: str) -> dict:
        self._sign_in()
        limits = self._call("submission limits", lambda: self.api.competition_get_submission_limits(slug), slug)
        return {"today": limits.num_today, "total": limits.num_total, "remaining": limits.num_allowed_now,
                "limited_by_total": limits.limited_by_total}

    def submissions(self, slug: str) -> list[dict]:
        self._sign_in()
        found = self._call("list submissions", lambda: self.api.competition_submissions(slug, page_size=100), slug)
        return [_submission_row(s) for s in found or [] if s is not None]

    def leaderboard(self, slug: str, max_pages: int = 10, page_size: int = 100) -> list[dict]:
        """The public leaderboard, ranked, paging until the end (or max_pages)."""
        from kagglesdk.competitions.types.competition_api_service import ApiGetLeaderboardRequest

        self._sign_in()
        entries: list[dict] = []
        token = ""
        for _ in range(max_pages):
            request = ApiGetLeaderboardRequest()
            request.competition_name, request.page_size, request.page_token = slug, page_size, token

            def page(request=request):
                with self.api.build_kaggle_client() as client:
                    return client.competitions.competition_api_client.get_leaderboard(request)

            response = self._call("leaderboard", page, slug)
            for item in response.submissions:
                entries.append({"rank": len(entries) + 1, "team": item.team_name or "", "score": item.score or "",
                                "date": item.submission_date.isoformat() if item.submission_date else ""})
            token = response.next_page_token
            if not token:
                break
        return entries

    def submit(self, slug: str, csv_path: Path, message: str) -> int:
        """Upload and create a submission; returns its ref. A retry first looks for the submission the failed
        attempt may have created (same message), so a lost response never makes a second submission."""
        self._sign_in()
        started = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=2)  # allow clock skew
        tries = []

        def attempt() -> int:
            if tries:
                existing = [s for s in self.api.competition_submissions(slug, page_size=20) or []
                            if s is not None and s.description == message and s.date and s.date >= started]
                if existing:
                    return existing[0].ref
            tries.append(1)
            response = self.api.competition_submit(str(csv_path), message, slug, quiet=True)
            if response.message == self.api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
                raise KaggleError(f"{csv_path}: the upload to Kaggle failed, so nothing was submitted; rerun to try "
                                  f"again")
            if response.ref:
                return response.ref
            mine = [s for s in self.api.competition_submissions(slug, page_size=20) or []
                    if s is not None and s.description == message]
            if not mine:
                raise KaggleError(f"{csv_path}: Kaggle accepted the upload ({response.message!r}) but lists no "
                                  f"submission with this message; check `asrpipe submissions`")
            return mine[0].ref

        return self._call("submit", attempt, slug)

    def poll(self, slug: str, ref: int, timeout: float, first_delay: float | None = None, factor: float = 1.5,
             max_delay: float = 30.0) -> dict:
        """Wait (with backoff) until submission `ref` is COMPLETE or ERROR; after `timeout` s return it PENDING."""
        deadline = time.monotonic() + timeout
        delay = first_delay if first_delay is not None else self.POLL_FIRST
        while True:
            found = {s["ref"]: s for s in self.submissions(slug)}
            current = found.get(ref)
            if current is not None and current["status"] != "PENDING":
                return current
            left = deadline - time.monotonic()
            if left <= 0:
                return current or {"ref": ref, "status": "PENDING"}
            self.sleep(min(delay, left))
            delay = min(delay * factor, max_delay)

    # ---- download ---------------------------------------------------------------------------------------
    def download(self, slug: str, target: Path) -> dict:
        """The competition's data zip at `target`: skipped when complete (size + sha256 recorded at the end of a
        verified download), resumed from `<target>.part` when the server allows ranges, checked for length and zip
        integrity (a cut-short transfer is resumed or restarted), renamed into place last."""
        target = Path(target)
        record = target.with_name(target.name + ".json")
        done = _read_json(record)
        if target.exists() and done and target.stat().st_size == done.get("size"):
            if sha256_file(target) == done.get("sha256"):
                self.log(f"{target.name}: complete ({_human(done['size'])}, sha256 {done['sha256'][:12]}…), "
                         f"not downloaded again")
                return {**done, "skipped": True}
            self.log(f"{target.name}: sha256 differs from the record; downloading again")
        self._sign_in()
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        for attempt in range(1, self.attempts + 1):
            try:
                result = self._fetch(slug, part)
            except _transport_errors() as exc:
                if attempt == self.attempts:
                    size = part.stat().st_size if part.exists() else 0
                    raise KaggleError(f"download of {slug}: the connection failed {attempt} times "
                                      f"({exc.__class__.__name__}); rerun to resume from {_human(size)}") from None
                delay = self._delay(attempt, exc)
                self.log(f"download interrupted ({exc.__class__.__name__}); retrying in {delay:.1f} s")
                self.sleep(delay)
                continue
            size = part.stat().st_size
            if result["total"] is not None and size != result["total"]:
                self.log(f"download cut short at {_human(size)} of {_human(result['total'])}; resuming")
                continue
            if not _zip_readable(part):
                self.log(f"{part.name}: not a complete zip archive ({_human(size)}); downloading again")
                part.unlink()
                _part_record(part).unlink(missing_ok=True)
                continue
            os.replace(part, target)
            _part_record(part).unlink(missing_ok=True)
            done = {"slug": slug, "size": size, "sha256": result["sha256"], "resumed": result["resumed"],
                    "downloaded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            write_json_atomic(record, done, fsync=False)
            return {**done, "skipped": False}
        raise KaggleError(f"download of {slug}: still incomplete after {self.attempts} attempts; rerun to resume")

    def _fetch(self, slug: str, part: Path) -> dict:
        import requests
        from kagglesdk.competitions.types.competition_api_service import ApiDownloadDataFilesRequest

        request = ApiDownloadDataFilesRequest()
        request.competition_name = slug
        with self.api.build_kaggle_client() as client:
            response = self._call("download", lambda: client.competitions.competition_api_client
                                  .download_data_files(request), slug)
            with response:
                length = response.headers.get("Content-Length")
                total = int(length) if length else None
                validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
                ranges = response.headers.get("Accept-Ranges") == "bytes"
                previous = _read_json(_part_record(part))
                have = part.stat().st_size if part.exists() else 0
                resumable = (ranges and validator and previous.get("validator") == validator
                             and previous.get("total") == total and 0 < have < (total or float("inf")))
                body = response
                if resumable:
                    ranged = requests.get(response.url, headers={"Range": f"bytes={have}-", "If-Range": validator},
                                          stream=True, timeout=60)
                    if ranged.status_code == 206:
                        body = ranged
                        self.log(f"resuming {part.name} at {_human(have)} of {_human(total)}")
                    else:
                        ranged.close()
                        have = 0
                else:
                    have = 0
                if have == 0:
                    write_json_atomic(_part_record(part), {"validator": validator, "total": total}, fsync=False)
                digest = _sha256_prefix(part, have)
                with contextlib.closing(body), open(part, "ab" if have else "wb") as out, _bytes_bar(
                        f"{slug}.zip", total, have, enabled=self.progress) as advance:
                    for chunk in body.iter_content(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        advance(len(chunk))
        return {"total": total, "sha256": digest.hexdigest(), "resumed": have > 0}


def _submission_row(s) -> dict:
    return {"ref": s.ref, "date": s.date.isoformat(timespec="seconds") if s.date else "",
            "description": s.description or "", "file_name": s.file_name or "",
            "status": s.status.name if hasattr(s.status, "name") else str(s.status),
            "public": s.public_score or "", "private": s.private_score or "", "error": s.error_description or "",
            "team": s.team_name or ""}


# ---- small helpers --------------------------------------------------------------------------------------------

def _part_record(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _sha256_prefix(path: Path, size: int):
    digest = hashlib.sha256()
    if size:
        with open(path, "rb") as handle:
            left = size
            while left and (block := handle.read(min(CHUNK, left))):
                digest.update(block)
                left -= len(block)
    return digest


def _zip_readable(path: Path) -> bool:
    """The central directory is there and parses (a cut-short zip has none); member CRCs are checked on unzip."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.infolist())
    except (zipfile.BadZipFile, OSError):
        return False


def _human(size: int | None) -> str:
    if size is None:
        return "? B"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


@contextlib.contextmanager
def _bytes_bar(name: str, total: int | None, done: int, enabled: bool):
    """A Rich byte progress bar (size, speed, ETA) on a terminal; nothing in logs and pipes."""
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    with Progress(TextColumn(f"      {name}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), transient=True, disable=not (enabled and sys.stdout.isatty())) as bar:
        task = bar.add_task("download", total=total, completed=done)
        yield lambda n: bar.advance(task, n)
