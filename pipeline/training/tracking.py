"""Experiment tracking: Weights & Biases when wanted, nothing otherwise.

mode: "auto"    online if a W&B key is configured (WANDB_API_KEY or an api.wandb.ai entry in ~/.netrc), else offline
      "online" / "offline"
      "off"     wandb is never imported
The key itself is never read into the run config; config keys that look like secrets are dropped before logging.
"""
from __future__ import annotations

import netrc
import os
import re
from pathlib import Path

SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|credential)", re.IGNORECASE)


def wandb_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.exists() and netrc.netrc(str(path)).authenticators("api.wandb.ai") is not None
    except (netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: str) -> str:
    if mode not in ("auto", "online", "offline", "off"):
        raise ValueError(f"tracking must be auto|online|offline|off, got {mode!r}")
    if mode == "auto":
        return "online" if wandb_key_configured() else "offline"
    return mode


def scrub_secrets(config):
    if isinstance(config, dict):
        return {k: scrub_secrets(v) for k, v in config.items() if not SECRET_KEY.search(str(k))}
    if isinstance(config, (list, tuple)):
        return [scrub_secrets(v) for v in config]
    return config


class Tracker:
    """log(metrics, step) / finish(summary); a no-op unless a wandb run was started."""

    def __init__(self, mode: str, out_dir: Path, run_name: str, run_config: dict, resume_id: str | None = None):
        self.mode = resolve_mode(mode)
        self.run = None
        if self.mode == "off":
            return
        os.environ.setdefault("WANDB_SILENT", "true")  # its banner and summary would drown the epoch lines
        import wandb

        self.run = wandb.init(
            mode=self.mode, dir=str(out_dir), name=run_name, config=scrub_secrets(run_config),
            id=resume_id, resume="allow" if resume_id else None, group=run_config.get("group"),
        )
        where = getattr(self.run, "dir", out_dir)
        hint = f"; upload later with: wandb sync {Path(where).parent}" if self.mode == "offline" else ""
        print(f"W&B {self.mode} run {self.run.id}{hint}", flush=True)

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log(self, metrics: dict, step: int) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in metrics.items() if v is not None}, step=step)

    def finish(self, summary: dict | None = None) -> None:
        if self.run is None:
            return
        for k, v in (summary or {}).items():
            self.run.summary[k] = v
        self.run.finish()
        self.run = None
