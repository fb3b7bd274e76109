"""benchmarks/xpeft/xpeft_eval.py: disjoint profile / validation / bank rows, banks that record
their adapters' scores, profile grids on the profile rows through glue.py --row_split, and a
report built from the files only."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from benchmarks.grid import glue
from benchmarks.xpeft import xpeft_eval
from fishjax.data.row_split import load_row_split, make_row_split, save_row_split
from fishjax.methods.xpeft.bank_file import load_bank


def test_partition_is_disjoint_seeded_and_sized():
    parts = xpeft_eval.partition(100, profile=20, validation=10, shards=3, shard_rows=15)
    sets = [set(parts["profile"]), set(parts["validation"]), *map(set, parts["shards"])]
    assert [len(s) for s in sets] == [20, 10, 15, 15, 15]
    assert sum(len(s) for s in sets) == len(set().union(*sets))  # pairwise disjoint
    # the profile rows are the ones load_split(max_samples=20, seed=0) keeps
    want = np.sort(np.random.default_rng(0).choice(100, 20, replace=False))
    np.testing.assert_array_equal(parts["profile"], want)
    again = xpeft_eval.partition(100, profile=20, validation=10, shards=3, shard_rows=15)
    for a, b in zip(parts["shards"], again["shards"], strict=True):
        np.testing.assert_array_equal(a, b)
    even = xpeft_eval.partition(100, profile=20, validation=10, shards=3, shard_rows=None)
    assert [len(s) for s in even["shards"]] == [23, 23, 23]  # the 70 rows left, cut evenly
    with pytest.raises(SystemExit, match="do not fit"):
        xpeft_eval.partition(100, profile=20, validation=10, shards=3, shard_rows=30)


def test_glue_row_split_flag_routes_rows_and_needs_validation_rows(tmp_path):
    with_val = save_row_split(str(tmp_path / "a.json"), make_row_split([0, 1, 2],
                                                                       validation=[3, 4]))
    without = save_row_split(str(tmp_path / "b.json"), make_row_split([0, 1, 2]))
    args = glue.parse_args(["--tasks", "sst2", "--train_subset", "none",
                            "--row_split", f"sst2={with_val}"])
    config = glue.cell_config("sst2", "head_only", 0, args)
    assert config.data.row_split == with_val
    assert glue._train_rows(config, "sst2") == 3
    assert glue.validation_cell_config("sst2", "head_only", 1e-2, 0, args).data.row_split \
        == with_val
    args = glue.parse_args(["--tasks", "sst2", "--train_subset", "none",
                            "--row_split", f"sst2={without}"])
    with pytest.raises(SystemExit, match="holds no `validation` rows"):
        glue.validation_cell_config("sst2", "head_only", 1e-2, 0, args)
    with pytest.raises(SystemExit, match="does not exist"):
        glue.parse_row_splits(f"sst2={tmp_path}/missing.json")
    with pytest.raises(SystemExit, match="task=PATH"):
        glue.parse_row_splits("sst2")


def _glue_dir(tmp_path):
    sst2 = tmp_path / "glue" / "SST-2"
    sst2.mkdir(parents=True)
    words = ("good", "bad")
    rows = [f"the film is {words[i % 2]} number {i} .\t{1 - i % 2}\n" for i in range(60)]
    (sst2 / "train.tsv").write_text("sentence\tlabel\n" + "".join(rows))
    (sst2 / "dev.tsv").write_text("sentence\tlabel\n" + "".join(rows[:10]))
    mrpc = tmp_path / "glue" / "MRPC"
    mrpc.mkdir()
    head = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    pairs = [f"{k % 2}\t{k}\t{k}\tfirst {k} .\t{'first' if k % 2 else 'second'} {k} .\n"
             for k in range(50)]
    (mrpc / "train.tsv").write_text(head + "".join(pairs))
    (mrpc / "dev.tsv").write_text(head + "".join(pairs[:10]))
    return str(tmp_path / "glue")


@pytest.mark.slow
def test_xpeft_eval_end_to_end_on_a_tiny_encoder(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(xpeft_eval, "TASKS", {
        "sst2": {"profile": 12, "validation": 8, "shards": 2, "shard_rows": 10, "epochs": 1},
        "mrpc": {"profile": 12, "validation": 8, "shards": 2, "shard_rows": None, "epochs": 1}})
    monkeypatch.setattr(xpeft_eval, "PROFILE_METHODS", ("head_only", "xpeft_hard_k2_sum"))
    monkeypatch.setattr(xpeft_eval, "LEAVE_OUT_METHODS", ("xpeft_soft",))
    monkeypatch.setattr(xpeft_eval, "SEEDS", "0,1")
    monkeypatch.setattr(xpeft_eval, "LR_GRID", "head_only=1e-2/3e-2,xpeft_hard_k2_sum=1e-2,"
                        "xpeft_soft=1e-2")
    out = str(tmp_path / "out")
    argv = ["--glue_dir", _glue_dir(tmp_path), "--model", tiny_model_dir, "--out", out,
            "--compilation_cache", "", "--set", f"data.cache_dir={tmp_path}/cache",
            "--set", "train.num_steps=2", "--set", "train.batch_size=8",
            "--set", "data.max_length=32", "--set", "data.buckets=(16, 32)"]
    manifest = xpeft_eval.main(argv)
    # rows: profile, validation and shards disjoint; the reference holds every shard row
    for task in ("sst2", "mrpc"):
        paths = xpeft_eval.split_paths(out, task)
        prof = load_row_split(paths["profile"])
        shard_rows = [set(load_row_split(p).train) for p in paths["shards"]]
        assert not set(prof.train) & set(prof.validation)
        assert not (set(prof.train) | set(prof.validation)) & set().union(*shard_rows)
        assert set(load_row_split(paths["reference"]).train) == set().union(*shard_rows)
        assert 0.0 <= manifest["probe"][task] <= 1.0
    assert manifest["rows"]["mrpc"]["shard_rows"] == [15, 15]  # (50 - 12 - 8) / 2
    # the banks: every shard (tasks interleaved), and the other task's shards only
    bank = load_bank(manifest["banks"]["all"]["path"])
    assert bank.size == 4
    names = [p.split("/")[-2] for p in bank.metadata["sources"]]
    assert names == ["sst2-shard0", "mrpc-shard0", "sst2-shard1", "mrpc-shard1"]
    assert [s["accuracy"] for s in bank.metadata["adapter_scores"]] == [
        manifest["adapters"][n]["dev"]["accuracy"] for n in names]
    assert manifest["banks"]["without-sst2"]["adapters"] == ["mrpc-shard0", "mrpc-shard1"]
    for name, a in manifest["adapters"].items():
        if "shard" in name:
            ref = manifest["adapters"][name.split("-")[0] + "-reference"]["score"]
            assert a["of_reference"] == pytest.approx(a["score"] / ref)
    # a clone holds the banks, not the adapters' run folders: nothing is retrained
    args = xpeft_eval.parse_args(argv)
    assert xpeft_eval.banks_intact(manifest, out, args)
    shutil.rmtree(f"{out}/adapters")
    xpeft_eval.main([*argv, "--step", "bank"])
    assert not os.path.exists(f"{out}/adapters")
    # another design (here: the SST-2 shards' rows) retrains, and the profile grids that
    # ran on the old banks refuse to go on
    monkeypatch.setitem(xpeft_eval.TASKS["sst2"], "shard_rows", 8)
    xpeft_eval.main([*argv, "--step", "rows"])
    assert not xpeft_eval.banks_intact(manifest, out, args)
    retrained = xpeft_eval.main([*argv, "--step", "bank"])
    changed = [n for n, a in retrained["adapters"].items()
               if a["key"] != manifest["adapters"][n]["key"]]
    assert sorted(changed) == ["sst2-reference", "sst2-shard0", "sst2-shard1"]
    assert retrained["banks"]["all"]["fingerprint"] != manifest["banks"]["all"]["fingerprint"]
    with pytest.raises(SystemExit, match="ran on other banks"):
        xpeft_eval.main([*argv, "--step", "in_bank"])
    # the profile grids trained on the profile rows, rates chosen on validation
    in_bank = json.load(open(f"{out}/in_bank/results.json"))
    for cell in in_bank["cells"].values():
        assert cell["status"] == "ok", cell.get("error")
        assert cell["train_examples"] == 12 and "validation/accuracy" in cell["final"]
    assert set(in_bank["selection"]["sst2"]) == {"head_only", "xpeft_hard_k2_sum"}
    leave = json.load(open(f"{out}/leave_out/results.json"))
    for cell in leave["cells"].values():
        config = json.load(open(f"{cell['workdir']}/config.json"))
        assert config["method"]["xpeft"]["pool"].endswith(f"without-{cell['task']}.safetensors")
    # the report: from the files only, one row per grid method
    rep = xpeft_eval.main(["--out", out, "--report"])
    table = xpeft_eval.readme_table(rep)
    assert "| head_only |" in table and "| xpeft_soft (bank without the task) |" in table
    assert rep["tasks"]["sst2"]["head_converged"] in (True, False)


def test_profile_grids_are_pinned_to_their_banks(tmp_path):
    out = str(tmp_path)
    with pytest.raises(SystemExit, match="run --step bank first"):
        xpeft_eval.pin_banks(out, "in_bank", {})
    manifest = {"banks": {"all": {"fingerprint": "a" * 64}}}
    os.makedirs(f"{out}/in_bank")
    (tmp_path / "in_bank" / "results.json").write_text("{}")
    with pytest.raises(SystemExit, match="no banks.json"):  # cells from before the pin
        xpeft_eval.pin_banks(out, "in_bank", manifest)
    os.remove(f"{out}/in_bank/results.json")
    xpeft_eval.pin_banks(out, "in_bank", manifest)
    xpeft_eval.pin_banks(out, "in_bank", manifest)  # the same banks: goes on
    manifest["banks"]["all"]["fingerprint"] = "b" * 64
    with pytest.raises(SystemExit, match="ran on other banks"):
        xpeft_eval.pin_banks(out, "in_bank", manifest)


def test_claim_picks_the_variant_on_validation_and_checks_both_margins():
    def sel(dev, val):
        return {"dev_scores": dev, "validation_by_lr": {"1e-02": val, "3e-02": None}}
    entry = {"in_bank": {"head_only": sel([0.76, 0.76], 0.79),
                         "adapter_pfeiffer": sel([0.785, 0.795], 0.80),
                         # the best dev, but not the best on validation: not picked
                         "xpeft_soft": sel([0.90], 0.70),
                         "xpeft_hard_k2_sum": sel([0.785, 0.785], 0.82)},
             "leave_out": {"xpeft_soft": sel([0.77], 0.78)}}
    got = xpeft_eval.claim(entry, "in_bank")
    assert got["variant"] == "xpeft_hard_k2_sum" and got["validation"] == 0.82
    assert got["within_adapter"] and not got["over_head"] and not got["holds"]  # +2.5 < +3
    entry["in_bank"]["head_only"] = sel([0.75], 0.79)
    assert xpeft_eval.claim(entry, "in_bank")["holds"]
    assert xpeft_eval.claim(entry, "in_bank")["over_probe"] is None  # no probe yet
    entry["probe_mean"] = 0.77  # the probe above the head: +1.5 over it is not +3
    assert xpeft_eval.claim(entry, "in_bank")["over_probe"] is False
    left = xpeft_eval.claim(entry, "leave_out")  # against the in-bank grid's baselines
    assert left["adapter_dev"] == pytest.approx(0.79) and not left["within_adapter"]
    assert xpeft_eval.claim({"in_bank": {"head_only": sel([0.7], 0.7)}}, "in_bank") is None


def test_readme_block_matches_the_committed_report():
    """The README's xpeft-eval block is what readme_table makes of the committed report."""
    from benchmarks.common import readme_blocks
    from fishjax.core.io import read_json

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = os.path.join(repo, xpeft_eval.DEFAULT_OUT, "report.json")
    table = xpeft_eval.readme_table(read_json(source))
    assert "converged probe" in table
    assert readme_blocks.check(os.path.join(repo, "README.md"), xpeft_eval.README_BLOCK,
                               source, table) == []
