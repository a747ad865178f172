"""A loopback stand-in for Kaggle's competition API, for driving the REAL `kaggle` client in tests.

It speaks what kaggle 2.2.4 / kagglesdk 0.1.37 send: `POST /api/v1/<service>/<Method>` with camelCase JSON, HTTP
basic auth (kaggle.json / KAGGLE_USERNAME+KAGGLE_KEY) or a bearer token (KAGGLE_API_TOKEN, checked through
`security.OAuthService/IntrospectToken`). DownloadDataFiles answers 302 to a "signed" URL served with GET (Range,
ETag, Content-Length); a submission is StartSubmissionUpload → PUT createUrl → CreateSubmission, scored after a
few ListSubmissions polls against the replica's solution (malformed CSVs become status ERROR with an
errorDescription, as on Kaggle). Faults are programmable per method: HTTP status (401/403/404/429/500…),
connection reset, truncated body.

    with KaggleStandIn({profile.slug: Competition.from_replica(profile)}) as kaggle:
        env = kaggle.environment(tmp_path)          # ASRPIPE_KAGGLE_ENDPOINT + KAGGLE_CONFIG_DIR with kaggle.json
        kaggle.fail("DownloadDataFiles", 429, times=2)
"""
from __future__ import annotations

import base64
import csv
import io
import json
import socket
import struct
import threading
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

from pipeline.submission import score

SERVICE = "competitions.CompetitionApiService"
DATA_GET = "GET data"        # the signed-URL download (a fault target like an RPC method name)
UPLOAD_PUT = "PUT upload"    # the createUrl upload


@dataclass
class Competition:
    slug: str
    archive: bytes
    solution: list[list[str]]            # header + rows: id, label, Usage
    metric: str = "levenshtein"
    direction: str = "min"

    @classmethod
    def from_replica(cls, profile, slug: str | None = None) -> "Competition":
        """Serve a replica (tests/kaggle_replica.make_replica) under its profile's slug, or under `slug`."""
        with open(profile.embedded_solution, newline="") as handle:
            solution = list(csv.reader(handle))
        return cls(slug or profile.slug, profile.embedded_zip.read_bytes(), solution, profile.metric,
                   profile.metric_direction)


@dataclass
class Fault:
    kind: str                  # "status" | "reset" | "lost" | "truncate" | "truncate-unsized"
    status: int = 0
    message: str = ""
    retry_after: str | None = None
    seconds: float = 0.0


@dataclass
class Submission:
    ref: int
    slug: str
    description: str
    file_name: str
    body: bytes
    date: str
    polls_left: int
    status: str = "PENDING"
    public: str | None = None
    private: str | None = None
    error: str | None = None


@dataclass
class State:
    competitions: dict[str, Competition]
    username: str
    key: str
    token: str | None
    max_daily: int
    polls_to_score: int
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    submissions: list[Submission] = field(default_factory=list)
    others: list[tuple[str, float]] = field(default_factory=lambda: [("top team", 0.5), ("runner up", 1.25),
                                                                      ("baseline", 8.0)])
    lock: threading.Lock = field(default_factory=threading.Lock)


class KaggleStandIn:
    def __init__(self, competitions: dict[str, Competition], *, username: str = "standin-user",
                 key: str = "0123456789abcdef0123456789abcdef", token: str | None = None, max_daily: int = 5,
                 polls_to_score: int = 2):
        self.state = State(competitions, username, key, token, max_daily, polls_to_score)
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.state = self.state
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.server.base_url = self.url
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="kaggle-standin", daemon=True)

    def __enter__(self) -> "KaggleStandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    # ---- test controls -------------------------------------------------------------------------------------
    def fail(self, method: str, status: int, times: int = 1, message: str = "", retry_after: str | None = None):
        self._queue(method, [Fault("status", status, message or _REASONS.get(status, "error"), retry_after)] * times)

    def lose(self, method: str, times: int = 1):
        """The server does the work, then the answer is lost (HTTP 500): a retry must not do it twice."""
        self._queue(method, [Fault("lost", 500, "Internal server error")] * times)

    def stall(self, method: str, seconds: float, times: int = 1):
        """The server does the work, then holds the answer for `seconds` (a client killed meanwhile never sees it)."""
        self._queue(method, [Fault("stall", seconds=seconds)] * times)

    def reset(self, method: str, times: int = 1):
        self._queue(method, [Fault("reset")] * times)

    def truncate(self, times: int = 1, sized: bool = True):
        self._queue(DATA_GET, [Fault("truncate" if sized else "truncate-unsized")] * times)

    def _queue(self, method: str, faults: list[Fault]) -> None:
        with self.state.lock:
            self.state.faults.setdefault(method, []).extend(faults)

    def count(self, method: str) -> int:
        return sum(1 for call in self.state.calls if call == method)

    def environment(self, base: Path, *, mode: int = 0o600, key: str | None = None) -> dict[str, str]:
        """Environment variables pointing asrpipe (and the kaggle client) at this server with a kaggle.json."""
        config_dir = base / "kaggle-config"
        config_dir.mkdir(parents=True, exist_ok=True)
        kaggle_json = config_dir / "kaggle.json"
        kaggle_json.write_text(json.dumps({"username": self.state.username, "key": key or self.state.key}))
        kaggle_json.chmod(mode)
        return {"ASRPIPE_KAGGLE_ENDPOINT": self.url, "KAGGLE_CONFIG_DIR": str(config_dir)}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # clients dropping kept-alive connections: not news
        pass


_REASONS = {400: "Bad request", 401: "Unauthenticated", 403: "Permission 'competitions.participate' was denied",
            404: "Competition not found", 429: "Too many requests", 500: "Internal server error",
            503: "Service unavailable"}


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "KaggleStandIn/1"

    def log_message(self, *args) -> None:  # quiet
        pass

    @property
    def state(self) -> State:
        return self.server.state

    # ---- plumbing ------------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: bytes = b"", content_type: str = "application/json",
              headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    def _json(self, status: int, data: dict, headers: dict | None = None) -> None:
        if getattr(self, "stall", None) is not None:
            time.sleep(self.stall.seconds)
            self.stall = None
        if getattr(self, "lost", None) is not None:
            status, data, self.lost = self.lost.status, {"code": self.lost.status, "message": self.lost.message}, None
        self._send(status, json.dumps(data).encode(), headers=headers)

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        self._json(status, {"code": status, "message": message}, headers)

    def _reset(self) -> None:
        """Abort the TCP connection (RST), as a load balancer dropping it would."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass

    def _fault(self, method: str) -> Fault | None:
        with self.state.lock:
            self.state.calls.append(method)
            queue = self.state.faults.get(method)
            return queue.pop(0) if queue else None

    def _apply(self, fault: Fault | None) -> bool:
        """Apply a status/reset fault; True when the request was answered by it."""
        if fault is None or fault.kind.startswith("truncate"):
            return False
        if fault.kind in ("lost", "stall"):
            setattr(self, fault.kind, fault)
            return False
        if fault.kind == "reset":
            self._reset()
            return True
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        self._error(fault.status, fault.message, headers)
        return True

    def _authorised(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme == "Basic":
            expected = base64.b64encode(f"{self.state.username}:{self.state.key}".encode()).decode()
            return value == expected
        return scheme == "Bearer" and self.state.token is not None and value == self.state.token

    # ---- RPCs ----------------------------------------------------------------------------------------------
    def do_POST(self) -> None:
        parts = urlparse(self.path).path.strip("/").split("/")
        body = self._body()
        if len(parts) != 4 or parts[:2] != ["api", "v1"]:
            return self._error(404, f"no route {self.path}")
        service, method = parts[2], parts[3]
        if self._apply(self._fault(method)):
            return None
        request = json.loads(body or b"{}")
        if service == "security.OAuthService" and method == "IntrospectToken":
            active = self.state.token is not None and request.get("token") == self.state.token
            return self._json(200, {"active": active, "username": self.state.username if active else ""})
        if service != SERVICE:
            return self._error(404, f"unknown service {service}")
        if not self._authorised(self.headers.get("Authorization")):
            return self._error(401, "Unauthenticated")
        competition = self.state.competitions.get(request.get("competitionName", ""))
        if competition is None:
            return self._error(404, "Competition not found")
        handler = getattr(self, f"rpc_{method}", None)
        if handler is None:
            return self._error(404, f"unknown method {method}")
        return handler(competition, request)

    def rpc_ListDataFiles(self, competition: Competition, request: dict) -> None:
        with zipfile.ZipFile(io.BytesIO(competition.archive)) as archive:
            files = [{"ref": info.filename, "name": info.filename, "totalBytes": info.file_size,
                      "creationDate": "2025-08-30T12:00:00.000Z"} for info in archive.infolist() if not info.is_dir()]
        self._json(200, {"files": files})

    def rpc_DownloadDataFiles(self, competition: Competition, request: dict) -> None:
        self._send(302, headers={"Location": f"{self.server.base_url}/signed/{competition.slug}.zip"
                                             f"?X-Goog-Expires=3600&X-Goog-Signature=cafe"})

    def rpc_GetSubmissionLimits(self, competition: Competition, request: dict) -> None:
        mine = [s for s in self.state.submissions if s.slug == competition.slug]
        self._json(200, {"numToday": len(mine), "numTotal": len(mine),
                         "numAllowedNow": max(0, self.state.max_daily - len(mine)), "limitedByTotal": False})

    def rpc_StartSubmissionUpload(self, competition: Competition, request: dict) -> None:
        with self.state.lock:
            token = f"blob-{len(self.state.uploads) + 1}"
            self.state.uploads[token] = b""
        self._json(200, {"token": token, "createUrl": f"{self.server.base_url}/upload/{token}"})

    def rpc_CreateSubmission(self, competition: Competition, request: dict) -> None:
        token = request.get("blobFileTokens", "")
        with self.state.lock:
            if token not in self.state.uploads:
                return self._error(400, f"unknown blob token {token!r}")
            submission = Submission(len(self.state.submissions) + 1001, competition.slug,
                                    request.get("submissionDescription", ""), f"{token}.csv",
                                    self.state.uploads.pop(token), _iso(datetime.now(timezone.utc)),
                                    self.state.polls_to_score)
            self.state.submissions.append(submission)
        self._json(200, {"message": f"Successfully submitted to {competition.slug}", "ref": submission.ref})

    def rpc_ListSubmissions(self, competition: Competition, request: dict) -> None:
        with self.state.lock:
            mine = [s for s in self.state.submissions if s.slug == competition.slug]
            for submission in mine:
                if submission.status == "PENDING":
                    submission.polls_left -= 1
                    if submission.polls_left <= 0:
                        _score(submission, competition)
        rows = [{"ref": s.ref, "date": s.date, "description": s.description, "fileName": s.file_name,
                 "status": s.status, "publicScore": s.public, "privateScore": s.private,
                 "errorDescription": s.error, "teamName": self.state.username, "submittedBy": self.state.username,
                 "totalBytes": len(s.body)} for s in reversed(mine)]
        self._json(200, {"submissions": [{k: v for k, v in row.items() if v is not None} for row in rows]})

    def rpc_GetLeaderboard(self, competition: Competition, request: dict) -> None:
        entries = list(self.state.others)
        scored = [float(s.public) for s in self.state.submissions
                  if s.slug == competition.slug and s.status == "COMPLETE"]
        if scored:
            entries.append((self.state.username, min(scored) if competition.direction == "min" else max(scored)))
        entries.sort(key=lambda e: e[1], reverse=competition.direction == "max")
        self._json(200, {"submissions": [{"teamId": 500 + i, "teamName": name, "score": f"{value:.5f}",
                                          "submissionDate": "2025-10-01T10:00:00.000Z"}
                                         for i, (name, value) in enumerate(entries)], "nextPageToken": ""})

    # ---- signed download and upload URLs -------------------------------------------------------------------
    def do_GET(self) -> None:
        path = urlparse(self.path).path
        fault = self._fault(DATA_GET)
        if self._apply(fault):
            return None
        slug = path.removeprefix("/signed/").removesuffix(".zip")
        competition = self.state.competitions.get(slug)
        if not path.startswith("/signed/") or competition is None:
            return self._error(404, "no such object")
        data = competition.archive
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{len(data):x}-{slug}"',
                   "Last-Modified": formatdate(1756555200, usegmt=True)}
        start, status = 0, 200
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes=") and (self.headers.get("If-Range") in (None, headers["ETag"])):
            start = int(wanted[len("bytes="):].split("-")[0])
            if start >= len(data):
                return self._send(416, headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        if fault is not None and fault.kind == "truncate-unsized":  # no Content-Length, then the connection ends
            self.send_response(status)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Connection", "close")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return None
        if fault is not None and fault.kind == "truncate":  # full Content-Length, half the bytes, connection closed
            self.send_response(status)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)  # FIN (not RST): the client keeps the bytes sent so far
            self.close_connection = True
            return None
        self._send(status, body, "application/zip", headers)

    def do_PUT(self) -> None:
        token = urlparse(self.path).path.removeprefix("/upload/")
        body = self._body()
        if self._apply(self._fault(UPLOAD_PUT)):
            return None
        with self.state.lock:
            if token not in self.state.uploads:
                return self._error(404, "upload expired")
            self.state.uploads[token] = body
        self._json(200, {})


def _score(submission: Submission, competition: Competition) -> None:
    """Kaggle's scorer: malformed files end as ERROR with a description, others get a public score."""
    try:
        rows = list(csv.reader(io.StringIO(submission.body.decode("utf-8"))))
    except UnicodeDecodeError:
        rows = []
    header, truth = competition.solution[0], competition.solution[1:]
    if not rows or rows[0] != header[:2]:
        found = ",".join(rows[0]) if rows else "(empty file)"
        submission.status = "ERROR"
        submission.error = f"Submission has columns {found}; expected {','.join(header[:2])}"
        return
    body = rows[1:]
    if len(body) != len(truth):
        submission.status, submission.error = "ERROR", f"Submission must have {len(truth)} rows (found {len(body)})"
        return
    predicted = {row[0]: row[1] if len(row) > 1 else "" for row in body}
    missing = [row[0] for row in truth if row[0] not in predicted]
    if missing:
        submission.status, submission.error = "ERROR", f"Submission is missing id {missing[0]}"
        return
    public = [row for row in truth if row[2] == "Public"]
    submission.public = f"{score(competition.metric, [r[1] for r in public], [predicted[r[0]] for r in public]):.5f}"
    submission.status = "COMPLETE"
