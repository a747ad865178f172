"""hw3p2 on a tiny Kaggle-layout replica, what only CTC has: greedy/beam/oracle figures and the log-prob cache,
decode folders named by beam; plus select's integer-buffer averaging and the recipe/override errors.
What all three families share is checked once, in test_pipeline_contract.py."""
from __future__ import annotations

import json

import pytest
import torch

from pipeline.config import ConfigError, load_recipe
from pipeline.engine import EngineError
from pipeline.stages.select import average_state_dicts, choose
from tests.test_pipeline_contract import finished_fixture, variant


finished = finished_fixture("demo-hw3p2")


def test_decode_reports_greedy_beam_and_oracle(finished):
    _, _, pipeline = finished
    metrics = pipeline.plan["decode"].artifact.manifest["metrics"]
    assert {"dev_greedy", "dev_beam", "dev_oracle"} <= set(metrics)
    assert metrics["dev_oracle"] <= metrics["dev_beam"] + 1e-9
    cache = pipeline.artifacts_root / "demo-hw3p2" / "logprobs" / pipeline.plan["select"].key[:16]
    assert (cache / "dev.pt").exists() and (cache / "test.pt").exists()


def test_each_beam_gets_its_own_decode_folder(finished):
    _, _, pipeline = finished
    assert pipeline.plan["decode"].params["beam"] == 4
    _, wider = variant(finished, "decode.beam=6", start="decode", stop="csv")   # the contract's decode change
    folders = [p for p in (wider.artifacts_root / "demo-hw3p2" / "decode").iterdir() if (p / ".done").exists()]
    assert {pipeline.plan["decode"].dir, wider.plan["decode"].dir} <= set(folders)  # other tests add their own
    assert wider.plan["decode"].dir.name.startswith("beam6-") and pipeline.plan["decode"].dir.name.startswith("beam4-")


def test_integer_buffers_average_by_floor_division():
    out = average_state_dicts([{"n": torch.tensor(3), "w": torch.tensor([1.0])},
                               {"n": torch.tensor(4), "w": torch.tensor([2.0])}])
    assert out["n"].item() == 3 and out["n"].dtype == torch.int64 and out["w"].item() == 1.5


def _index(tmp_path, epochs: int, keep_top_k: int = 3, keep_last: int = 3):
    entries = [{"file": f"epoch{e:03d}.pt", "epoch": e, "dev_lev": 10.0 - e} for e in range(1, epochs + 1)]
    (tmp_path / "index.json").write_text(json.dumps({
        "metric": "dev_lev", "direction": "min", "keep_top_k": keep_top_k, "keep_last": keep_last,
        "checkpoints": sorted(entries, key=lambda e: e["dev_lev"])[:keep_top_k], "recent": entries[-keep_last:] if keep_last else []}))
    return tmp_path


def test_averaging_takes_every_checkpoint_of_a_run_shorter_than_n(tmp_path):
    assert [e["epoch"] for e in choose(_index(tmp_path, 5), "average-best", 3)] == [5, 4, 3]
    assert [e["epoch"] for e in choose(_index(tmp_path, 5), "average-last", 3)] == [3, 4, 5]
    assert [e["epoch"] for e in choose(_index(tmp_path, 2), "average-best", 3)] == [2, 1]   # a 2-epoch run
    assert [e["epoch"] for e in choose(_index(tmp_path, 1), "average-last", 3)] == [1]


def test_averaging_more_checkpoints_than_the_run_keeps_is_refused(tmp_path):
    with pytest.raises(EngineError, match="2 top-k checkpoints kept, average-best needs 3 "
                                         r"\(raise train.keep_top_k and retrain, or lower select.n\)"):
        choose(_index(tmp_path, 5, keep_top_k=2), "average-best", 3)
    with pytest.raises(EngineError, match="0 recent checkpoints kept, average-last needs 3 "
                                         r"\(raise train.keep_last"):
        choose(_index(tmp_path, 5, keep_last=0), "average-last", 3)


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "train.lrr: unknown key (did you mean train.lr?)"),
    ("train.epochs=many", "train.epochs"),
    ("decode.beam=0", "decode.beam"),
    ("bogus.x=1", "unknown section 'bogus'"),
    ("train.lr", "expected key=value"),
])
def test_bad_overrides_are_one_clear_line(override, message):
    with pytest.raises(ConfigError) as error:
        load_recipe("hw3p2", "demo", (override,))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_numbers_in_overrides_are_parsed():
    recipe = load_recipe("hw3p2", "demo", ("train.lr=3e-3", "train.epochs=7"))
    assert recipe["train"]["lr"] == 0.003 and recipe["train"]["epochs"] == 7


@pytest.mark.parametrize("message", ["[v2] lr 3e-3", "note #3", "2024", "yes", 'say "hi"'])
def test_submit_messages_are_kept_verbatim(message):
    recipe = load_recipe("hw3p2", "demo", (f"submit.message={json.dumps(message)}",))
    assert recipe["submit"]["message"] == message


def test_unreadable_recipe_is_one_line(tmp_path):
    folder = tmp_path / "recipe.yaml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="cannot be read"):
        load_recipe("hw3p2", str(folder))
