"""`asrpipe schedule`: run `asrpipe rerun` every day at a UTC time, as a systemd user timer (or a cron line).

    install(task="hw3p2", at="00:10", rerun_args=[...])   # units in $XDG_CONFIG_HOME/systemd/user (~/.config/...)
    installed()                                             # [(task, at, command, enabled)]
    remove(task="hw3p2")

The timer fires at `at` UTC (just after Kaggle's quota day turns), `Persistent=true` catches up a run missed while
the machine was off; the service is a oneshot that calls this environment's `asrpipe` with absolute paths, and
counts rerun's "skipped" (3) and "locked" (4) as success so the journal flags only errors. Where `systemctl --user`
does not work (no user session bus: containers, some SSH logins), install prints the crontab line instead.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.errors import AsrpipeError

PREFIX = "asrpipe-rerun-"


class ScheduleError(AsrpipeError):
    pass


def unit_dir() -> Path:
    import os

    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def unit_name(task: str) -> str:
    return PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "_", task)


def check_time(at: str) -> tuple[int, int]:
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", at.strip())
    if not match:
        raise ScheduleError(f"--at {at}: expected HH:MM (24-hour, UTC), e.g. --at 00:10")
    return int(match.group(1)), int(match.group(2))


def asrpipe_command() -> list[str]:
    """This environment's asrpipe, as an absolute path (cron and systemd have no PATH of ours)."""
    script = Path(sys.executable).parent / "asrpipe"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def systemd_quote(arg: str) -> str:
    """One ExecStart word: % and $ doubled (systemd expands specifiers and variables), quoted with C-style escapes
    when it has spaces, quotes, backslashes or a semicolon."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if not re.search(r"[\s\"'\\;]", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'



def units(task: str, at: str, command: list[str], workdir: Path) -> dict[str, str]:
    hour, minute = check_time(at)
    name = unit_name(task)
    service = "\n".join([
        "[Unit]",
        f"Description=asrpipe rerun --task {task} (submits only when it helps)",
        "",
        "[Service]",
        "Type=oneshot",
        f"WorkingDirectory={workdir}",
        "Environment=PYTHONUNBUFFERED=1",
        "ExecStart=" + " ".join(systemd_quote(a) for a in command),
        "SuccessExitStatus=3 4",
        "",
    ])
    timer = "\n".join([
        "[Unit]",
        f"Description=asrpipe rerun of {task} every day at {hour:02d}:{minute:02d} UTC",
        "",
        "[Timer]",
        f"OnCalendar=*-*-* {hour:02d}:{minute:02d}:00 UTC",
        "Persistent=true",
        f"Unit={name}.service",
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
    ])
    return {f"{name}.service": service, f"{name}.timer": timer}


def cron_line(at: str, command: list[str], workdir: Path, lock: Path, log: Path) -> str:
    """A crontab line at `at` UTC in this machine's local time (Debian's cron has no CRON_TZ); % is escaped, since
    cron turns a bare one into a newline."""
    import shlex
    import time

    hour, minute = check_time(at)
    offset = -time.altzone if time.localtime().tm_isdst > 0 else -time.timezone   # seconds east of UTC
    local = (hour * 60 + minute + offset // 60) % (24 * 60)
    line = (f"{local % 60} {local // 60} * * * cd {shlex.quote(str(workdir))} && flock -n {shlex.quote(str(lock))} "
            f"{shlex.join(command)} >> {shlex.quote(str(log))} 2>&1")
    return f"# {at} UTC, in this machine's local time\n" + line.replace("%", "\\%")


def systemctl(*args: str) -> subprocess.CompletedProcess | None:
    if not shutil.which("systemctl"):
        return None
    return subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True)


def install(task: str, at: str, command: list[str], workdir: Path, submissions: Path, log=print) -> list[Path]:
    folder = unit_dir()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in units(task, at, command, workdir).items():
        path = folder / name
        path.write_text(text)
        written.append(path)
    log(f"wrote {', '.join(str(p) for p in written)}")
    reload = systemctl("daemon-reload")
    enabled = reload is not None and reload.returncode == 0 and \
        systemctl("enable", "--now", f"{unit_name(task)}.timer").returncode == 0
    if enabled:
        log(f"enabled {unit_name(task)}.timer: `systemctl --user list-timers` shows the next run; for runs while "
            f"logged out: loginctl enable-linger $USER")
    else:
        why = (reload.stderr.strip().splitlines() or ["failed"])[0] if reload is not None else "no systemctl"
        lock = Path(submissions).resolve() / "rerun-cron.lock"
        log(f"systemctl --user does not work here ({why}); add this to `crontab -e` instead:")
        log(cron_line(at, command, workdir, lock, Path(submissions).resolve() / "rerun-cron.log"))
    return written


def installed() -> list[dict]:
    rows = []
    for timer in sorted(unit_dir().glob(f"{PREFIX}*.timer")):
        service = timer.with_suffix(".service")
        calendar = re.search(r"^OnCalendar=(.*)$", timer.read_text(), re.M)
        command = re.search(r"^ExecStart=(.*)$", service.read_text(), re.M) if service.exists() else None
        state = systemctl("is-enabled", timer.name)
        rows.append({"unit": timer.name, "when": calendar.group(1) if calendar else "?",
                     "command": command.group(1) if command else "(service file missing)",
                     "enabled": state.stdout.strip() if state is not None and state.stdout.strip() else "unknown"})
    return rows


def remove(task: str, log=print) -> list[Path]:
    name = unit_name(task)
    paths = [p for p in (unit_dir() / f"{name}.timer", unit_dir() / f"{name}.service") if p.exists()]
    if not paths:
        raise ScheduleError(f"no schedule for {task} in {unit_dir()} (asrpipe schedule list shows what there is)")
    systemctl("disable", "--now", f"{name}.timer")
    for path in paths:
        path.unlink()
    systemctl("daemon-reload")
    log(f"removed {', '.join(str(p) for p in paths)}")
    return paths
