"""`asrpipe history`: a competition's submissions over time, from the ledger, reruns.log and saved leaderboards.

    frame = history(Path("submissions"), "hw3p2")        # one row per submission and per skipped rerun
    png = plot(frame, ranks(...), path, metric="levenshtein", dev="dev metric")

Public and private scores and the dev metric of each submission, the reruns that decided not to submit (markers
at their dev metric), and the leaderboard rank wherever `asrpipe leaderboard` was run (submissions/<c>/ranks.csv).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.rerun import parse, read_log

COLUMNS = ["time", "event", "dev", "public", "private", "predicted", "detail"]


def history(submissions_root: Path, competition: str) -> pd.DataFrame:
    from pipeline.submission import read_ledger

    rows = [{"time": r["time"], "event": f"submitted ({r['status']})", "dev": parse(r["dev_metric"]),
             "public": parse(r["public_score"]), "private": parse(r["private_score"]),
             "predicted": parse(r.get("predicted_public")), "detail": r.get("kaggle_ref") or r["csv_sha256"][:12]}
            for r in read_ledger(submissions_root) if r["competition"] == competition]
    rows += [{"time": r["time"], "event": f"rerun {r['decision']}", "dev": r["dev"], "public": None, "private": None,
              "predicted": None, "detail": r["reason"]}
             for r in read_log(Path(submissions_root) / competition / "reruns.log") if r["decision"] != "submitted"]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    return frame.sort_values("time", kind="stable").reset_index(drop=True)


def ranks(submissions_root: Path, competition: str) -> pd.DataFrame:
    path = Path(submissions_root) / competition / "ranks.csv"
    if not path.exists():
        return pd.DataFrame(columns=["time", "rank", "teams", "score"])
    frame = pd.read_csv(path)
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    return frame


def plot(frame: pd.DataFrame, ranked: pd.DataFrame, path: Path, metric: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if len(ranked) else 1
    fig, axes = plt.subplots(panels, 1, figsize=(10, 4.5 * panels), sharex=True, squeeze=False)
    ax = axes[0][0]
    submitted = frame[frame["event"].str.startswith("submitted")]
    skipped = frame[frame["event"].str.startswith("rerun")]
    ax.plot(submitted["time"], submitted["public"], "o-", label=f"public {metric}")
    ax.plot(submitted["time"], submitted["private"], "s--", label=f"private {metric}", alpha=0.7)
    if submitted["predicted"].notna().any():
        ax.plot(submitted["time"], submitted["predicted"], "^", label="predicted public", alpha=0.7)
    dev_ax = ax.twinx()
    dev_ax.plot(submitted["time"], submitted["dev"], "d:", color="tab:green", label="dev metric (submitted)")
    if len(skipped):
        dev_ax.plot(skipped["time"], skipped["dev"], "x", color="tab:red", markersize=9, label="rerun skipped")
    dev_ax.set_ylabel("dev metric")
    ax.set_ylabel(metric)
    lines = ax.get_legend_handles_labels()
    more = dev_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    if panels == 2:
        rank_ax = axes[1][0]
        rank_ax.plot(ranked["time"], ranked["rank"], "o-", color="tab:purple")
        rank_ax.invert_yaxis()
        rank_ax.set_ylabel("public leaderboard rank")
        rank_ax.grid(alpha=0.3)
    import matplotlib.dates as mdates

    bottom = axes[-1][0]
    locator = mdates.AutoDateLocator()
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    from pipeline.files import save_figure

    return save_figure(fig, path)
