"""The REAL kaggle client (kaggle 2.2.4 / kagglesdk) through pipeline/kaggle_client.py, against the loopback
stand-in server in tests/kaggle_standin.py: data files, download, submit + polling, leaderboard, limits, and the
faults 401, 403, 404, 429, 500, connection reset, truncated downloads, lost responses, failed uploads."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile

import pytest

from pipeline.kaggle_client import Kaggle, KaggleError, _api_class
from tests.kaggle_replica import make_replica
from tests.kaggle_standin import DATA_GET, UPLOAD_PUT, Competition, KaggleStandIn

PROFILE = "hw3p2-f25"


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    profile = make_replica(tmp_path_factory.mktemp("replica"), PROFILE)
    return dataclasses.replace(profile, local_data=None)


@pytest.fixture
def standin(replica):
    with KaggleStandIn({replica.slug: Competition.from_replica(replica)}) as server:
        yield server


@pytest.fixture
def kaggle_env(standin, tmp_path, monkeypatch):
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.kaggle/access_token of the machine running the tests
    for name, value in standin.environment(tmp_path).items():
        monkeypatch.setenv(name, value)
    return standin


class Recorder:
    def __init__(self):
        self.lines: list[str] = []
        self.sleeps: list[float] = []


@pytest.fixture
def record():
    return Recorder()


@pytest.fixture
def client(kaggle_env, record):
    return Kaggle(backoff=0.5, log=record.lines.append, sleep=record.sleeps.append, progress=False)


def sample_csv(replica, tmp_path):
    with zipfile.ZipFile(replica.embedded_zip) as archive:
        name = next(n for n in archive.namelist() if n.endswith(replica.sample_submission))
        target = tmp_path / "sample_submission.csv"
        target.write_bytes(archive.read(name))
    return target


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- happy paths -------------------------------------------------------------------------------------------------

def test_lists_data_files_and_limits(client, replica, kaggle_env):
    names = [f["name"] for f in client.list_files(replica.slug)]
    assert any(n.endswith("sample_submission.csv") for n in names) and any(n.endswith(".npy") for n in names)
    assert client.limits(replica.slug) == {"today": 0, "total": 0, "remaining": 5, "limited_by_total": False}
    assert kaggle_env.count("ListDataFiles") == 1 and kaggle_env.count("GetSubmissionLimits") == 1


def test_download_is_verified_and_skipped_when_complete(client, replica, kaggle_env, tmp_path, record):
    target = tmp_path / "dl" / f"{replica.slug}.zip"
    first = client.download(replica.slug, target)
    assert first["sha256"] == sha256(replica.embedded_zip) == sha256(target) and not first["skipped"]
    again = client.download(replica.slug, target)
    assert again["skipped"] and kaggle_env.count("DownloadDataFiles") == 1
    assert any("not downloaded again" in line for line in record.lines)


def test_submit_is_polled_until_scored_then_on_the_leaderboard(client, replica, kaggle_env, tmp_path, record):
    ref = client.submit(replica.slug, sample_csv(replica, tmp_path), "sample | csv 0123abcd")
    assert [c for c in kaggle_env.state.calls if c in ("StartSubmissionUpload", "PUT upload", "CreateSubmission")] \
        == ["StartSubmissionUpload", "PUT upload", "CreateSubmission"]
    scored = client.poll(replica.slug, ref, timeout=60, first_delay=0.25)
    assert scored["status"] == "COMPLETE" and float(scored["public"]) > 0 and scored["ref"] == ref
    assert record.sleeps == [0.25]            # pending at the first poll, scored at the second
    board = client.leaderboard(replica.slug)
    assert [e["rank"] for e in board] == [1, 2, 3, 4]
    assert [e["team"] for e in board if e["team"] == "standin-user"] and board[0]["team"] == "top team"
    assert client.limits(replica.slug)["remaining"] == 4


def test_malformed_csv_surfaces_as_error_with_kaggle_description(client, replica, kaggle_env, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\n0,abc\n")
    ref = client.submit(replica.slug, bad, "bad")  # the client accepts it; Kaggle's scorer rejects it later
    result = client.poll(replica.slug, ref, timeout=60, first_delay=0.0)
    assert result["status"] == "ERROR" and result["error"] == "Submission has columns id,label; expected index,label"


def test_access_token_is_checked_by_introspection(replica, tmp_path, monkeypatch, record):
    with KaggleStandIn({replica.slug: Competition.from_replica(replica)}, token="tok-123") as server:
        for name in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "empty"))
        monkeypatch.setenv("ASRPIPE_KAGGLE_ENDPOINT", server.url)
        monkeypatch.setenv("KAGGLE_API_TOKEN", "tok-123")
        assert Kaggle(log=record.lines.append).limits(replica.slug)["remaining"] == 5
        assert server.count("IntrospectToken") == 1
        monkeypatch.setenv("KAGGLE_API_TOKEN", "tok-expired")
        with pytest.raises(KaggleError, match="did not accept the token in KAGGLE_API_TOKEN"):
            Kaggle(log=record.lines.append).limits(replica.slug)


def test_username_and_key_from_the_environment(standin, replica, tmp_path, monkeypatch, record):
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("ASRPIPE_KAGGLE_ENDPOINT", standin.url)
    monkeypatch.setenv("KAGGLE_USERNAME", standin.state.username)
    monkeypatch.setenv("KAGGLE_KEY", standin.state.key)
    client = Kaggle(log=record.lines.append)
    assert client.credentials.source == "KAGGLE_USERNAME/KAGGLE_KEY"
    assert client.limits(replica.slug)["remaining"] == 5


# ---- faults: retried ---------------------------------------------------------------------------------------------

def test_429_then_success_backs_off_exponentially(client, replica, kaggle_env, record):
    kaggle_env.fail("ListSubmissions", 429, times=3)
    assert client.submissions(replica.slug) == []
    assert record.sleeps == [0.5, 1.0, 2.0] and kaggle_env.count("ListSubmissions") == 4
    assert sum("HTTP 429; retrying" in line for line in record.lines) == 3


def test_429_honours_retry_after(client, replica, kaggle_env, record):
    kaggle_env.fail("GetLeaderboard", 429, retry_after="7")
    assert len(client.leaderboard(replica.slug)) == 3
    assert record.sleeps == [7.0]


def test_500_then_success(client, replica, kaggle_env, record):
    kaggle_env.fail("GetSubmissionLimits", 500, times=2)
    kaggle_env.fail("ListDataFiles", 503)
    assert client.limits(replica.slug)["remaining"] == 5
    assert client.list_files(replica.slug)
    assert record.sleeps == [0.5, 1.0, 0.5]


def test_connection_reset_then_success(client, replica, kaggle_env, record, tmp_path):
    kaggle_env.reset("GetSubmissionLimits")
    kaggle_env.reset("DownloadDataFiles")
    assert client.limits(replica.slug)["remaining"] == 5
    target = tmp_path / f"{replica.slug}.zip"
    assert client.download(replica.slug, target)["sha256"] == sha256(replica.embedded_zip)
    assert sum("ConnectionError; retrying" in line for line in record.lines) == 2


def test_truncated_download_is_resumed_with_a_range_request(client, replica, kaggle_env, tmp_path, record):
    kaggle_env.truncate(1)
    target = tmp_path / f"{replica.slug}.zip"
    result = client.download(replica.slug, target)
    assert result["resumed"] and result["sha256"] == sha256(replica.embedded_zip) == sha256(target)
    # cut short, then the redirect of the second RPC (dropped unread), then the Range request
    assert kaggle_env.count(DATA_GET) == 3 and any(line.startswith("resuming") for line in record.lines)
    assert not target.with_name(target.name + ".part").exists()


def test_truncated_download_without_length_is_fetched_again(client, replica, kaggle_env, tmp_path, record):
    kaggle_env.truncate(1, sized=False)  # nothing tells the client the body was short: only the zip check does
    target = tmp_path / f"{replica.slug}.zip"
    assert client.download(replica.slug, target)["sha256"] == sha256(replica.embedded_zip)
    assert any("not a complete zip archive" in line for line in record.lines)


def test_lost_create_response_does_not_submit_twice(client, replica, kaggle_env, tmp_path):
    kaggle_env.lose("CreateSubmission")
    ref = client.submit(replica.slug, sample_csv(replica, tmp_path), "once | csv 77")
    assert len(kaggle_env.state.submissions) == 1 and kaggle_env.state.submissions[0].ref == ref


# ---- faults: refused with one actionable line ---------------------------------------------------------------------

def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_401_says_where_the_token_goes(standin, replica, tmp_path, monkeypatch, record):
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, value in standin.environment(tmp_path, key="wrong-key-4711").items():
        monkeypatch.setenv(name, value)
    with pytest.raises(KaggleError) as error:
        Kaggle(log=record.lines.append).limits(replica.slug)
    message = one_line(error)
    assert "401 Unauthorized" in message and str(tmp_path / "kaggle-config" / "kaggle.json") in message
    assert "kaggle.com/settings" in message and "wrong-key-4711" not in message


def test_403_gives_the_rules_url(client, replica, kaggle_env, tmp_path):
    kaggle_env.fail("DownloadDataFiles", 403)
    with pytest.raises(KaggleError) as error:
        client.download(replica.slug, tmp_path / "x.zip")
    message = one_line(error)
    assert f"https://www.kaggle.com/competitions/{replica.slug}/rules" in message and "standin-user" in message
    assert kaggle_env.count("DownloadDataFiles") == 1  # not retried


def test_404_names_the_slug(client):
    with pytest.raises(KaggleError) as error:
        client.limits("11785-no-such-competition")
    assert "no competition '11785-no-such-competition' (404" in one_line(error)


def test_persistent_429_gives_up_clearly(client, replica, kaggle_env, record):
    kaggle_env.fail("ListSubmissions", 429, times=10)
    with pytest.raises(KaggleError) as error:
        client.submissions(replica.slug)
    assert "rate limit (429 Too Many Requests) persisted through 5 attempts" in one_line(error)
    assert record.sleeps == [0.5, 1.0, 2.0, 4.0]


def test_unreachable_server_gives_up_clearly(kaggle_env, record, monkeypatch):
    monkeypatch.setenv("ASRPIPE_KAGGLE_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(KaggleError) as error:
        Kaggle(attempts=2, sleep=record.sleeps.append, log=record.lines.append).limits("x")
    assert "cannot reach Kaggle at http://127.0.0.1:9 (ConnectionError) after 2 attempts" in one_line(error)


def test_failed_upload_is_an_error_not_a_silent_return(client, replica, kaggle_env, tmp_path):
    kaggle_env.fail(UPLOAD_PUT, 500)
    with pytest.raises(KaggleError) as error:
        client.submit(replica.slug, sample_csv(replica, tmp_path), "m")
    assert "the upload to Kaggle failed, so nothing was submitted" in one_line(error)
    assert kaggle_env.state.submissions == []


def test_missing_credentials_say_where_to_put_them(tmp_path, monkeypatch):
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "cfg"))
    with pytest.raises(KaggleError) as error:
        Kaggle()
    message = one_line(error)
    assert "no Kaggle credentials found" in message and str(tmp_path / "cfg" / "kaggle.json") in message
    assert "KAGGLE_API_TOKEN" in message


# ---- credentials hygiene ------------------------------------------------------------------------------------------

def test_world_readable_kaggle_json_is_warned_about(standin, tmp_path, monkeypatch, record):
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, value in standin.environment(tmp_path, mode=0o644).items():
        monkeypatch.setenv(name, value)
    Kaggle(log=record.lines.append)
    path = tmp_path / "kaggle-config" / "kaggle.json"
    assert record.lines == [f"warning: {path} is readable by other users (mode 644); run: chmod 600 {path}"]
    Kaggle(log=record.lines.append)
    assert len(record.lines) == 1  # once per process
    os.chmod(path, 0o600)
    record.lines.clear()
    Kaggle(log=record.lines.append)
    assert record.lines == []


def test_the_key_is_never_printed_even_with_verbose_client(client, replica, kaggle_env, tmp_path, record, capfd,
                                                           monkeypatch):
    monkeypatch.setattr(_api_class().__mro__[1], "args", ["--verbose"])  # what VERBOSE=1 at import would give
    verbose = Kaggle(log=record.lines.append, sleep=record.sleeps.append)
    kaggle_env.fail("ListSubmissions", 429)
    verbose.submissions(replica.slug)
    verbose.download(replica.slug, tmp_path / "x.zip")
    verbose.submit(replica.slug, sample_csv(replica, tmp_path), "m")
    with pytest.raises(KaggleError):
        verbose.limits("nope")
    out, err = capfd.readouterr()
    key = kaggle_env.state.key
    assert key not in out + err + "\n".join(record.lines)
    assert key not in repr(verbose.credentials)


# ---- why asrpipe wraps the client: facts about kaggle 2.2.4 that these tests pin ---------------------------------

def test_raw_client_keeps_a_cut_short_zip_and_does_not_retry_429(client, replica, kaggle_env, tmp_path):
    api = client.api
    client._sign_in()
    kaggle_env.truncate(1, sized=False)
    api.competition_download_files(replica.slug, path=str(tmp_path / "raw"), quiet=True)
    saved = tmp_path / "raw" / f"{replica.slug}.zip"
    assert saved.stat().st_size < replica.embedded_zip.stat().st_size and not zipfile.is_zipfile(saved)
    kaggle_env.fail("ListSubmissions", 429)
    with pytest.raises(Exception) as error:
        api.competition_submissions(replica.slug)
    assert error.value.response.status_code == 429 and kaggle_env.count("ListSubmissions") == 1
