"""benchmarks/grid/evidence.py and the grid methods it adds to glue.py: budget variants at the
right counts, the FISH reference recipe as a grid method, budget cells at the rate their 0.5%
method chose, and the report (tables, claims, the log-x curve) from results files only."""

from __future__ import annotations

import argparse
import json
import os

import pytest

from benchmarks.common.tiny_model import write_tiny_rte
from benchmarks.grid import evidence, glue
from benchmarks.grid import validation_protocol as vp
from configs import fish_reference
from fishjax.data.row_split import make_row_split, save_row_split
from fishjax.train.validation import validate_config


def _validate(cfg, data_dir) -> None:
    """The trainer's config check on a grid cell's config (the data folder made real)."""
    cfg.data.dir = str(data_dir)
    validate_config(cfg)


def test_budget_variants_train_their_share_of_the_parameters():
    args = glue.parse_args(["--tasks", "sst2", "--train_subset", "none"])
    assert glue.cell_config("sst2", "fish_b2", 0, args).method.keep_ratio == 0.02
    assert glue.cell_config("sst2", "random_mask_b0.1", 0, args).method.keep_ratio == 0.001
    sift = glue.cell_config("sst2", "sift_b5", 0, args).method.sift
    entries = sift.rate * glue.MINILM_ATTENTION + glue.MINILM_HEAD
    assert entries == pytest.approx(0.05 * glue.MINILM_PARAMS, rel=1e-5)
    assert sift.head_regex == "^classifier/"  # METHOD_OVERRIDES["sift"] still applies
    assert glue.sift_rate(0.5) == pytest.approx(0.0318, abs=1e-4)  # the grid's own rate


def test_fish_reference_is_the_reference_recipe_not_the_grid_rate():
    args = glue.parse_args(["--tasks", "mrpc", "--train_subset", "none"])
    config = glue.cell_config("mrpc", "fish_reference", 0, args)
    t = config.train
    assert (t.learning_rate, t.batch_size, t.num_epochs, t.warmup_ratio) == (5e-5, 16, 7.0, 0.0)
    assert config.method.name == "fish" and config.method.fisher.mode == "empirical"
    assert config.method.budget_rounding == "floor"
    # every field configs/fish_reference.py sets, and only those, as recorded overrides
    reference = fish_reference.get_config("mrpc")
    assert config.to_dict() == {**reference.to_dict(), "seed": 0,
                                "model": config.model.to_dict(), "data": config.data.to_dict()}
    assert "train.learning_rate=5e-05" in glue.cell_overrides("fish_reference", args)


def _args(out):
    return argparse.Namespace(out=out, model="minilm-l6", glue_dir="g", set=["a=1"])


def _selection(task, method, lr, dev):
    return {"chosen_lr": lr, "validation_by_lr": {vp.lr_id(lr): 0.8}, "dev_scores": dev,
            "majority_dev": 0.5, "at_majority": False}


def _cell(task, method, lr, seed, dev, entries):
    return {"status": "ok", "task": task, "method": method, "seed": seed, "learning_rate": lr,
            "main_metric": "accuracy", "final": {"accuracy": dev}, "trainable_entries": entries,
            "total_params": glue.MINILM_PARAMS, "device": "cpu"}


def test_budget_cells_wait_for_and_inherit_the_main_rates(tmp_path):
    out = str(tmp_path)
    assert evidence.inherited_rates(out) is None
    sel = {"sst2": {m: _selection("sst2", m, 6e-4, [0.8]) for m in evidence.CURVE_METHODS}}
    sel["sst2"]["ird"]["chosen_lr"] = None  # not chosen yet
    os.makedirs(f"{out}/main")
    json.dump({"cells": {}, "selection": sel}, open(f"{out}/main/results.json", "w"))
    assert evidence.inherited_rates(out) is None
    sel["sst2"]["ird"]["chosen_lr"] = 2e-3
    json.dump({"cells": {}, "selection": sel}, open(f"{out}/main/results.json", "w"))
    grid = vp.parse_lr_grid(evidence.inherited_rates(out))
    assert grid["fish_b0.1"] == (6e-4,) and grid["ird_b5"] == (2e-3,)
    argv = evidence.part_argv("budget", _args(out), evidence.inherited_rates(out))
    assert argv[argv.index("--seeds") + 1] == evidence.BUDGET_SEEDS
    assert argv[argv.index("--out") + 1] == f"{out}/budget" and argv[-2:] == ["--set", "a=1"]
    ref = evidence.part_argv("reference", _args(out))
    assert ref[ref.index("--lr_grid") + 1] == "fish_reference=5e-5"
    # every part's cells read the encoder by mean pooling, the reference recipe's too, in a
    # config the trainer accepts (a mean-pooled head has no Hugging Face export)
    for part in ("main", "rte", "reference"):
        cfg = glue.cell_config("mrpc", "fish_reference" if part == "reference" else "fish", 0,
                               glue.parse_args(evidence.part_argv(part, _args(out))[:-2]))
        assert cfg.model.pooling == "mean" and not cfg.train.export, part
        _validate(cfg, tmp_path)


def test_report_claims_and_curve_from_the_results_files(tmp_path):
    out = str(tmp_path)
    main_cells, main_sel = {}, {"sst2": {}, "mrpc": {}}
    devs = {"full": 0.90, "fish": 0.86, "random_mask": 0.80, "ird": 0.85, "sift": 0.88,
            "lora": 0.87, "lora_fish_warmup": 0.88}
    for m, d in devs.items():
        for task in ("sst2", "mrpc"):
            main_sel[task][m] = _selection(task, m, 6e-4, [d, d + 0.02])
            for s in (0, 1):
                main_cells[vp.cell_id(task, m, 6e-4, s)] = _cell(task, m, 6e-4, s,
                                                               d + 0.02 * s, 113_570)
                if task == "mrpc":  # finished on a lent GPU (evidence_parallel.py)
                    main_cells[vp.cell_id(task, m, 6e-4, s)]["device"] = "gpu: H100"
    budget_cells, budget_sel = {}, {"sst2": {}}
    for name in evidence.budget_methods():
        budget_sel["sst2"][name] = _selection("sst2", name, 6e-4, [0.7])
        budget_cells[vp.cell_id("sst2", name, 6e-4, 0)] = _cell("sst2", name, 6e-4, 0, 0.7,
                                                                 22_714)
    for part, cells, sel in (("main", main_cells, main_sel), ("budget", budget_cells,
                                                               budget_sel)):
        os.makedirs(f"{out}/{part}")
        json.dump({"cells": cells, "selection": sel}, open(f"{out}/{part}/results.json", "w"))
    rep = evidence.main(["--out", out, "--report"])
    fish_vs_random = next(c for c in rep["claims"] if c["a"] == "fish" and c["task"] == "sst2")
    assert fish_vs_random["difference"] == pytest.approx(6.0)
    fish = [p for p in rep["curve"] if p["method"] == "fish"]
    assert [p["percent"] for p in fish] == [0.5, 0.1, 2.0, 5.0]
    assert fish[0]["fraction"] == pytest.approx(113_570 / glue.MINILM_PARAMS)
    assert fish[0]["dev_mean"] == pytest.approx(0.86)  # seed 0 only, as the other points
    assert fish[0]["seeds"] == 1
    full = [p for p in rep["curve"] if p["method"] == "full"]  # the curve's end, at 100%
    assert [(p["percent"], p["dev_mean"]) for p in full] == [(100.0, pytest.approx(0.90))]
    assert os.path.getsize(f"{out}/budget_curve.png") > 0
    text = evidence.readme_text(rep)
    assert ("SST-2 (4,500 rows, 10% of them validation) and MRPC (28 cells; sst2 on cpu (14); "
            "mrpc on gpu: H100 (14))") in text
    assert ("| FISH beats a random mask at equal count | sst2 | fish 87.0 ± 1.0 | random_mask "
            "81.0 ± 1.0 | +6.0 | > 0 | holds |") in text
    # SIFT 89 vs full 91: -2 points, 1 past the 1-point line, one seed std (1.0) away
    assert "| -2.0 | >= -1 | does not hold (within seed spread) |" in text
    # LoRA-FISH 89 vs LoRA 88, std 1: holds, but the line is within one std of the difference
    assert "| +1.0 | >= 0 | holds (within seed spread) |" in text
    assert json.load(open(f"{out}/report.json")) == json.loads(json.dumps(rep))


def test_validation_grid_refuses_cells_run_another_way(tmp_path):
    out = str(tmp_path / "out")
    split = save_row_split(str(tmp_path / "s.json"), make_row_split([0, 1], validation=[2]))
    cell = {"status": "ok", "task": "rte", "method": "full", "seed": 0, "learning_rate": 1e-4,
            "main_metric": "accuracy", "overrides": ["train.num_epochs=1"],
            "row_split": {"path": split, "sha256": "0" * 64}}
    os.makedirs(out)
    json.dump({"cells": {"rte-full-lr0.0001-s0": cell}}, open(f"{out}/results.json", "w"))
    argv = ["--select_on", "validation", "--tasks", "rte", "--methods", "full", "--out", out,
            "--train_subset", "none", "--row_split", f"rte={split}", "--estimate"]
    with pytest.raises(SystemExit, match="ran with overrides"):
        glue.main(argv)
    with pytest.raises(SystemExit, match="other rows"):
        glue.main([*argv, "--set", "train.num_epochs=1"])


def test_readme_block_matches_the_committed_report():
    """The README's evidence block is what `readme_text` makes of the committed report, and
    the report what `report` makes of the committed parts."""
    from benchmarks.common import readme_blocks
    from fishjax.core.io import read_json

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = os.path.join(repo, "benchmarks", "results", "evidence")
    rep = read_json(os.path.join(out, "report.json"))
    assert json.loads(json.dumps(evidence.report(out))) == rep
    assert readme_blocks.read(os.path.join(repo, "README.md"), evidence.README_BLOCK,
                              "benchmarks/results/evidence/report.json") == \
        evidence.readme_text(rep)


def test_validation_grid_refuses_another_model_or_carved_split(tmp_path):
    rte = tmp_path / "glue" / "RTE"
    rte.mkdir(parents=True)
    rows = "".join(f"{i}\tA {i} .\tB {i} .\t{('entailment', 'not_entailment')[i % 2]}\n"
                   for i in range(40))
    for split in ("train", "dev"):
        (rte / f"{split}.tsv").write_text("index\tsentence1\tsentence2\tlabel\n" + rows)
    out = str(tmp_path / "out")
    cell = {"status": "ok", "task": "rte", "method": "full", "seed": 0, "learning_rate": 1e-4,
            "main_metric": "accuracy", "overrides": [], "model": "other-model",
            "row_split": {"path": "x", "sha256": "0" * 64}}
    os.makedirs(out)
    json.dump({"cells": {"rte-full-lr0.0001-s0": cell}}, open(f"{out}/results.json", "w"))
    argv = ["--select_on", "validation", "--tasks", "rte", "--methods", "full", "--out", out,
            "--glue_dir", str(tmp_path / "glue"), "--train_subset", "none", "--estimate"]
    with pytest.raises(SystemExit, match="ran on model 'other-model'"):
        glue.main(argv)
    cell["model"] = "minilm-l6"  # the carved validation split (made now) has other rows
    json.dump({"cells": {"rte-full-lr0.0001-s0": cell}}, open(f"{out}/results.json", "w"))
    with pytest.raises(SystemExit, match="other rows"):
        glue.main(argv)


def test_a_glue_cell_records_the_command_that_resumes_its_grid():
    args = glue.parse_args(["--tasks", "rte", "--methods", "fish", "--set", "a=b c"])
    assert glue.grid_command(args) == ("python -m benchmarks.grid.glue --tasks rte --methods "
                                       "fish --set 'a=b c'")


def test_a_stop_file_stops_a_glue_grid_between_cells(tmp_path, monkeypatch):
    out, ran = str(tmp_path / "out"), []

    def fake_run_cell(task, method, seed, args, *rest):
        ran.append(seed)
        open(os.path.join(out, "STOP"), "w").close()  # asked to stop while this cell runs
        return {"status": "ok", "task": task, "method": method, "seed": seed,
                "main_metric": "accuracy", "final": {"accuracy": 0.5},
                "trainable_entries": 10, "total_params": 10, "overrides": []}

    monkeypatch.setattr(glue, "run_cell", fake_run_cell)
    argv = ["--tasks", "rte", "--methods", "full", "--seeds", "0,1,2", "--out", out,
            "--train_subset", "none", "--compilation_cache", ""]
    glue.main(argv)
    assert ran == [0] and list(json.load(open(f"{out}/results.json"))["cells"]) == \
        [glue.cell_id("rte", "full", 0)]
    glue.main(argv)  # a new run clears the request and goes on
    assert ran == [0, 1]


def test_xpeft_part_waits_for_and_runs_the_leave_out_variant(tmp_path):
    path = str(tmp_path / "leave_out.json")
    assert evidence.xpeft_choice(path) is None  # the X-PEFT experiment has not run
    val = {"xpeft_soft": (0.80, 0.70), "xpeft_hard_k2_mean": (0.82, 0.71),
           "xpeft_hard_k2_sum": (0.84, 0.60)}
    sel = {task: {m: {"chosen_lr": 0.01, "validation_by_lr": {"0.01": v[i], "0.03": 0.99}}
                  for m, v in val.items()} for i, task in enumerate(("sst2", "mrpc"))}
    sel["mrpc"]["xpeft_soft"]["chosen_lr"] = None  # one variant not chosen yet on one task
    json.dump({"selection": sel}, open(path, "w"))
    assert evidence.xpeft_choice(path) is None
    sel["mrpc"]["xpeft_soft"]["chosen_lr"] = 0.01
    json.dump({"selection": sel}, open(path, "w"))
    # the means at the chosen rate (the 0.03 scores were not chosen): k2_mean 0.765 is best
    assert evidence.xpeft_choice(path) == "xpeft_leaveout_hard_k2_mean"
    argv = evidence.part_argv("xpeft", _args(str(tmp_path)), "xpeft_leaveout_hard_k2_mean")
    # the head alone on the same rates: what the bank adds to the head
    assert argv[argv.index("--methods") + 1] == "xpeft_leaveout_hard_k2_mean,head_only"
    assert argv[argv.index("--lr_grid") + 1] == ("xpeft_leaveout_hard_k2_mean=3e-3/1e-2/3e-2,"
                                                 "head_only=3e-3/1e-2/3e-2")
    cfg = glue.cell_config("mrpc", "xpeft_leaveout_hard_k2_mean", 0,
                           glue.parse_args(argv[:-2]))
    x = cfg.method.xpeft
    assert (cfg.method.name, x.variant, x.k, x.mixing) == ("xpeft", "hard", 2, "mean")
    assert x.pool == "benchmarks/results/xpeft_eval/banks/without-mrpc.safetensors"
    assert cfg.model.pooling == "mean"
    _validate(cfg, tmp_path)
    head = glue.cell_config("mrpc", "head_only", 0, glue.parse_args(argv[:-2]))
    assert (head.method.name, head.model.pooling) == ("head_only", "mean")
    _validate(head, tmp_path)


def _part(task, runs):
    """A part's state: {method: (chosen lr, {seed: dev})} as finished cells and selection."""
    cells, selection = {}, {}
    for method, (lr, devs) in runs.items():
        selection[method] = _selection(task, method, lr, list(devs.values()))
        for seed, dev in devs.items():
            cells[vp.cell_id(task, method, lr, seed)] = {
                "task": task, "method": method, "learning_rate": lr, "seed": seed,
                "status": "ok", "main_metric": "accuracy", "final": {"dev/accuracy": dev}}
    return {"cells": cells, "selection": {task: selection}}


def test_xpeft_claim_reads_the_xpeft_part_against_main_adapter():
    main = _part("sst2", {"adapter": (1e-3, {0: 0.85, 1: 0.87})})
    xpeft = _part("sst2", {"xpeft_leaveout_soft": (1e-2, {0: 0.855, 1: 0.855})})
    rows = evidence.claims(evidence.claim_scores(main, xpeft))
    assert [(r["a"], r["b"], r["holds"]) for r in rows] == [("xpeft", "adapter", True)]
    assert rows[0]["difference"] == pytest.approx(-0.5)


def test_xpeft_part_head_only_row_is_the_heads_line():
    main = _part("sst2", {"adapter": (1e-3, {0: 0.85, 1: 0.87})})
    xpeft = _part("sst2", {"xpeft_leaveout_hard_k2_mean": (3e-3, {0: 0.80, 1: 0.82}),
                           "head_only": (1e-2, {0: 0.78, 1: 0.79})})
    rows = evidence.claims(evidence.claim_scores(main, xpeft))
    by_b = {r["b"]: r for r in rows}
    assert set(by_b) == {"adapter", "head_only"}  # head_only is not read as the variant
    assert by_b["adapter"]["difference"] == pytest.approx(-5.0)
    # 2.5 points above the head alone: short of the 3 the line asks
    assert by_b["head_only"]["difference"] == pytest.approx(2.5)
    assert not by_b["head_only"]["holds"] and by_b["head_only"]["goal"] == ">= 3"


def test_rte_part_adds_the_hard_case_to_the_claims_it_can_read():
    """RTE runs full, fish and sift: SIFT vs full gets an RTE row; FISH vs random does not
    (no random mask there), and main's rows are unchanged."""
    main = _part("mrpc", {"sift": (2e-3, {0: 0.82}), "full": (1e-4, {0: 0.83})})
    rte = _part("rte", {"sift": (6e-3, {0: 0.556, 1: 0.55}), "full": (1e-4, {0: 0.578, 1: 0.59}),
                        "fish": (2e-3, {0: 0.56})})
    rows = evidence.claims(evidence.claim_scores(main, {"cells": {}, "selection": {}}, rte))
    assert sorted((r["task"], r["a"], r["b"]) for r in rows) == [
        ("mrpc", "sift", "full"), ("rte", "sift", "full")]
    [row] = [r for r in rows if r["task"] == "rte"]
    assert row["seeds"] == 2 and row["difference"] == pytest.approx(-3.1)
    assert not row["holds"]


def test_claims_compare_only_the_seeds_both_methods_have():
    """Mid-grid FISH has three seeds and the random mask one: the claim reads seed 0 of
    both, not FISH's 3-seed mean against one seed; a cell at another rate is not read."""
    main = _part("mrpc", {"fish": (6e-4, {0: 0.811, 1: 0.820, 2: 0.822}),
                          "random_mask": (2e-2, {0: 0.809})})
    main["cells"]["stray"] = {"task": "mrpc", "method": "random_mask", "learning_rate": 2e-3,
                              "seed": 1, "status": "ok", "main_metric": "accuracy",
                              "final": {"dev/accuracy": 0.5}}
    rows = evidence.claims(evidence.claim_scores(main, {"cells": {}, "selection": {}}))
    [row] = [r for r in rows if r["a"] == "fish"]
    assert row["seeds"] == 1 and row["a_mean"] == pytest.approx(81.1)
    assert row["difference"] == pytest.approx(0.2)
    assert evidence.verdict(row) == "holds (1 seed)"


@pytest.mark.slow
def test_every_main_method_trains_a_cell_with_the_grids_settings(tiny_model_dir, tmp_path):
    """Each method of `main`, one budget variant and the reference recipe run one 2-step
    cell on the tiny encoder through the validation protocol, read by the grid's mean
    pooling: a setting the trainer refuses fails here, not hours into the grid."""
    glue_dir = write_tiny_rte(str(tmp_path), 60)
    methods = [*evidence.METHODS, "fish_b2", "fish_reference"]
    state = glue.main([
        "--select_on", "validation", "--glue_dir", glue_dir, "--tasks", "rte",
        "--methods", ",".join(methods), "--seeds", "0", "--model", tiny_model_dir,
        "--out", str(tmp_path / "out"), "--train_subset", "none", "--compilation_cache", "",
        "--lr_grid", ",".join(f"{m}=1e-3" for m in methods),
        *[x for s in glue.MEAN_POOLING for x in ("--set", s)],
        "--set", f"data.cache_dir={tmp_path}/cache", "--set", "train.num_steps=2",
        "--set", "train.batch_size=8", "--set", "data.max_length=32",
        "--set", "data.buckets=(16, 32)"])
    cells = state["cells"]
    assert {c["method"] for c in cells.values()} == set(methods)
    assert {k: c.get("error") for k, c in cells.items() if c["status"] != "ok"} == {}


def test_sst2_main_and_the_budget_curve_run_before_mrpc(tmp_path, monkeypatch):
    out, calls = str(tmp_path), []

    def fake_glue_main(argv):
        part = os.path.basename(argv[argv.index("--out") + 1])
        calls.append((part, argv[argv.index("--tasks") + 1]))
        if part == "main":  # the SST-2 rates the budget part waits for
            sel = {"sst2": {m: _selection("sst2", m, 6e-4, [0.8])
                            for m in evidence.CURVE_METHODS}}
            os.makedirs(f"{out}/main", exist_ok=True)
            json.dump({"cells": {}, "selection": sel}, open(f"{out}/main/results.json", "w"))

    monkeypatch.setattr(glue, "main", fake_glue_main)
    monkeypatch.setattr(evidence, "xpeft_choice", lambda: "xpeft_leaveout_soft")
    args = argparse.Namespace(**vars(_args(out)), estimate=False, estimate_from=None)
    evidence.run(args)
    assert calls == [("main", "sst2"), ("budget", "sst2"), ("main", "sst2,mrpc"),
                     ("rte", "rte"), ("xpeft", "sst2,mrpc"), ("reference", "mrpc")]
    calls.clear()
    evidence.run(argparse.Namespace(**vars(args) | {"estimate": True}))
    assert sorted(c[0] for c in calls) == sorted(evidence.PARTS)  # each part counted once
