"""benchmarks/grid/glue.py: grid, resumability, crash isolation, Markdown table from the JSON."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.grid import cells as grid_cells
from benchmarks.grid import glue
from fishjax.data import get_task, load_split


def _rte_folder(tmp_path):
    d = tmp_path / "glue" / "RTE"
    d.mkdir(parents=True)
    header = "index\tsentence1\tsentence2\tlabel\n"
    rows = [f"{i}\tthe movie is {'great' if i % 2 else 'bad'} .\tit is good .\t"
            f"{'entailment' if i % 2 else 'not_entailment'}\n" for i in range(24)]
    (d / "train.tsv").write_text(header + "".join(rows))
    (d / "dev.tsv").write_text(header + "".join(rows[:8]))
    return str(tmp_path / "glue")


@pytest.mark.slow
def test_grid_resumes_and_isolates_crashes(tiny_model_dir, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    argv = ["--glue_dir", _rte_folder(tmp_path), "--tasks", "rte", "--methods", "full,nope",
            "--seeds", "0,1", "--model", tiny_model_dir, "--out", out,
            "--set", f"data.cache_dir={tmp_path}/cache", "--set", "train.num_steps=2",
            "--set", "train.batch_size=8", "--set", "train.export=False",
            "--set", "data.max_length=32", "--set", "data.buckets=(16, 32)",
            "--json", str(tmp_path / "copy.json")]
    state = glue.main(argv)
    cells = state["cells"]
    assert {c["status"] for k, c in cells.items() if "-full-" in k} == {"ok"}
    assert {c["status"] for k, c in cells.items() if "-nope-" in k} == {"error"}
    assert "nope" in cells["rte-nope-s0"]["error"]
    assert json.load(open(tmp_path / "copy.json")) == state

    table = open(f"{out}/results.md").read()
    scores = [100 * grid_cells.score_of(cells[f"rte-full-s{s}"]) for s in (0, 1)]
    assert f"| full | {sum(scores) / 2:.1f} ±" in table
    assert "| nope | –" in table

    # Second run: finished cells are skipped; only the failed ones are retried.
    calls = []

    def fake_run_cell(task, method, seed, args):
        calls.append((task, method, seed))
        raise ValueError("still broken")

    monkeypatch.setattr(glue, "run_cell", fake_run_cell)
    glue.main(argv)
    assert sorted(calls) == [("rte", "nope", 0), ("rte", "nope", 1)]


# -- tables, README block, subsets, estimates (no training) ------------------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cell(task, method, seed, score, trainable, total=1000, **extra):
    metric = get_task(task).main_metric
    return {"status": "ok", "task": task, "method": method, "seed": seed,
            "main_metric": metric, "final": {metric: score}, "trainable_entries": trainable,
            "total_params": total, "wall_s": 100.0, "total_steps": 10, **extra}


def _state():
    cells = [_cell("rte", "full", 0, 0.60, 1000), _cell("rte", "full", 1, 0.56, 1000),
             _cell("rte", "fish", 0, 0.52, 5), _cell("mrpc", "fish", 0, 0.80, 5),
             {"status": "error", "task": "mrpc", "method": "lora_x", "seed": 0,
              "main_metric": "f1_acc_mean", "error": "boom"}]
    return {"cells": {grid_cells.cell_id(c["task"], c["method"], c["seed"]): c for c in cells}}


def test_results_table_is_a_function_of_the_json():
    table = glue.results_table(_state())
    lines = table.splitlines()
    assert lines[0] == ("| method | rte (accuracy) | mrpc (f1_acc_mean) | "
                        "trainable (% of params) |")
    assert lines[2] == "| full | 58.0 ± 2.0 (n=2) | – | 1,000 (100%) |"
    assert lines[3] == "| fish | 52.0 ± 0.0 (n=1) | 80.0 ± 0.0 (n=1) | 5 (0.5%) |"
    assert lines[4] == "| lora_x | – | – | – |"  # methods not in METHOD_ORDER come last


def test_total_params_falls_back_to_the_full_cell():
    state = _state()
    fish = dict(state["cells"]["rte-fish-s0"], total_params=None)
    assert grid_cells.total_params_of(fish, state["cells"]) == 1000
    lone = dict(state["cells"]["mrpc-fish-s0"], total_params=None)
    assert grid_cells.total_params_of(lone, state["cells"]) is None
    assert grid_cells.trainable_fraction(fish, state["cells"]) == 0.005


def _readme(tmp_path, block="old\n"):
    path = tmp_path / "README.md"
    path.write_text("# Results\n\n<!-- glue-table:begin (generated) -->\n" + block
                    + "<!-- glue-table:end -->\n\nafter\n")
    return str(path)


def test_readme_block_generated_passes_hand_edited_fails(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_state()))
    readme = _readme(tmp_path)
    assert glue.check_readme(readme, str(results))  # stale block
    glue.write_readme(readme, str(results))
    text = open(readme).read()
    assert text.startswith("# Results\n\n<!-- glue-table:begin (generated) -->\n| method |")
    assert text.endswith("<!-- glue-table:end -->\n\nafter\n")
    assert glue.check_readme(readme, str(results)) == []
    open(readme, "w").write(text.replace("52.0 ± 0.0", "55.0 ± 0.0"))  # typed by hand
    problems = glue.check_readme(readme, str(results))
    assert problems and any("55.0" in p for p in problems)
    # The CLI: --check_readme exits 1 on a mismatch, --report --readme rewrites the block.
    out = str(tmp_path)
    with pytest.raises(SystemExit):
        glue.main(["--out", out, "--check_readme", readme])
    glue.main(["--out", out, "--report", "--readme", readme])
    assert glue.check_readme(readme, str(results)) == []
    assert open(tmp_path / "results.md").read() == glue.results_table(_state())  # all of it
    glue.main(["--out", out, "--report", "--tasks", "mrpc", "--methods", "fish"])
    assert open(tmp_path / "results.md").read().splitlines()[2] == (
        "| fish | 80.0 ± 0.0 (n=1) | 5 (0.5%) |")
    glue.main(["--out", out, "--check_readme", readme])


def test_readme_without_markers_is_reported(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_state()))
    readme = tmp_path / "README.md"
    readme.write_text("no table here\n")
    assert "expected one" in glue.check_readme(str(readme), str(results))[0]
    with pytest.raises(glue.ReadmeError):
        glue.write_readme(str(readme), str(results))
    assert readme.read_text() == "no table here\n"
    with pytest.raises(SystemExit, match="--readme: .*expected one"):
        glue.main(["--out", str(tmp_path), "--report", "--readme", str(readme)])
    assert "no such file" in glue.check_readme(str(tmp_path / "nope.md"), str(results))[0]


def test_readme_blocks_are_found_by_their_source(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        state = _state()
        if name == "b":
            state["cells"]["rte-full-s0"]["final"]["accuracy"] = 0.70
        (tmp_path / name / "results.json").write_text(json.dumps(state))
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- glue-table:begin a/results.json -->\nold a\n<!-- glue-table:end -->"
                      "\ny\n<!-- glue-table:begin b/results.json -->\nold b\n"
                      "<!-- glue-table:end -->\nz\n")
    a, b = str(tmp_path / "a" / "results.json"), str(tmp_path / "b" / "results.json")
    glue.write_readme(str(readme), b)
    assert glue.readme_block(str(readme), a) == "old a\n"  # the other block is untouched
    assert glue.check_readme(str(readme), b) == []
    assert glue.check_readme(str(readme), a)
    glue.write_readme(str(readme), a)
    assert glue.check_readme(str(readme), a) == [] and glue.check_readme(str(readme), b) == []
    assert glue.readme_block(str(readme), a) != glue.readme_block(str(readme), b)
    assert "no such file" in glue.check_readme(str(readme), str(tmp_path / "c.json"))[0]
    (tmp_path / "c").mkdir()
    other = str(tmp_path / "c" / "results.json")
    (tmp_path / "c" / "results.json").write_text(json.dumps(_state()))
    assert "expected one '<!-- glue-table:begin c/results.json -->'" in \
        glue.check_readme(str(readme), other)[0]
    readme.write_text("<!-- glue-table:begin a/results.json -->\nno end\n")
    with pytest.raises(glue.ReadmeError, match="never closed"):
        glue.readme_block(str(readme), a)


def test_repo_readme_tables_match_committed_results():
    """Every glue-table block of the README is what its named results.json generates."""
    from benchmarks.common import readme_blocks

    readme = os.path.join(REPO, "README.md")
    found = readme_blocks.blocks(readme, glue.README_BLOCK)
    assert found, "README.md must carry its generated glue-table blocks"
    for block in found:
        assert block.source, "each README glue-table block names its results.json"
        results = readme_blocks.source_path(readme, block)
        assert os.path.exists(results), results
        assert glue.check_readme(readme, results) == []


def test_method_variants_run_their_base_method_with_fixed_overrides():
    args = glue.parse_args(["--set", "train.num_epochs=1"])
    assert glue.base_method("lora_fish_random") == "lora_fish"
    assert glue.base_method("fish") == "fish"
    assert glue.cell_overrides("adapter_fish_reversed", args) == [
        glue.AT_INIT, "method.peft.selection=reversed", "train.num_epochs=1"]
    config = glue.cell_config("rte", "lora_fish_random", 3, args)
    assert config.method.name == "lora_fish"
    assert config.method.peft.selection == "random"
    assert config.seed == 3 and config.train.num_epochs == 1
    lrs = dict(item.split("=") for item in glue.DEFAULT_METHOD_LR.split(","))
    assert config.train.learning_rate == float(lrs["lora_fish"])  # the base method's rate
    # --no_method_overrides drops budget matching, not what defines the variant.
    args = glue.parse_args(["--no_method_overrides"])
    assert glue.cell_overrides("lora_fish_random", args) == [
        glue.AT_INIT, "method.peft.selection=random"]
    assert glue.cell_overrides("lora_fish", args) == [glue.AT_INIT]  # the paper's, as run
    assert not glue.cell_config("rte", "lora_fish", 0, args).method.peft.fisher_after_warmup
    assert glue.cell_config("rte", "lora_fish_warmup", 0, args).method.peft.fisher_after_warmup
    assert glue.cell_overrides("sift", args) == []


def test_train_subset_is_fixed_and_matches_load_split(tmp_path):
    src = tmp_path / "SST-2"
    src.mkdir()
    rows = [f"sentence number {i} \t{i % 2}\n" for i in range(50)]
    (src / "train.tsv").write_text("sentence\tlabel\n" + "".join(rows))
    (src / "dev.tsv").write_text("sentence\tlabel\n" + "".join(rows[:5]))
    folder, manifest = glue.ensure_train_subset("sst2", str(src), 20, 0, str(tmp_path / "c"))
    sub = load_split("sst2", "train", folder)
    ref = load_split("sst2", "train", str(src), max_samples=20, seed=0)
    assert sub.text_a == ref.text_a and list(sub.labels) == list(ref.labels)
    assert len(sub) == 20 and manifest["size"] == 20 and manifest["source_rows"] == 50
    assert (tmp_path / "c" / "glue_subsets").is_dir()
    assert open(os.path.join(folder, "dev.tsv")).read() == (src / "dev.tsv").read_text()
    # Same arguments: the same folder, not rewritten; a changed source: a new folder.
    mtime = os.path.getmtime(os.path.join(folder, "train.tsv"))
    again, _ = glue.ensure_train_subset("sst2", str(src), 20, 0, str(tmp_path / "c"))
    assert again == folder and os.path.getmtime(os.path.join(folder, "train.tsv")) == mtime
    (src / "train.tsv").write_text("sentence\tlabel\n" + "".join(rows[::-1]))
    changed, _ = glue.ensure_train_subset("sst2", str(src), 20, 0, str(tmp_path / "c"))
    assert changed != folder
    with pytest.raises(SystemExit, match="only 50 rows"):
        glue.ensure_train_subset("sst2", str(src), 80, 0, str(tmp_path / "c"))


def test_train_subset_flag():
    assert glue.parse_train_subset("sst2=8000,SST-2=10") == {"sst2": 10}
    assert glue.parse_train_subset("none") == {}
    for bad in ("sst2", "sst2=0", "sst2=x", "nosuchtask=5"):
        with pytest.raises((SystemExit, ValueError)):
            glue.parse_train_subset(bad)


def test_cell_config_uses_the_subset_folder(tmp_path):
    src = tmp_path / "glue" / "SST-2"
    src.mkdir(parents=True)
    rows = "".join(f"s {i} \t{i % 2}\n" for i in range(30))
    (src / "train.tsv").write_text("sentence\tlabel\n" + rows)
    (src / "dev.tsv").write_text("sentence\tlabel\n" + rows)
    args = glue.parse_args(["--glue_dir", str(tmp_path / "glue"), "--train_subset", "sst2=10",
                            "--set", f"data.cache_dir={tmp_path}/cache"])
    config = glue.cell_config("sst2", "fish", 1, args)
    assert config.data.dir.startswith(str(tmp_path / "cache" / "glue_subsets"))
    assert glue.planned_steps(config, "sst2") == 3  # 3 epochs x ceil(10 / 32)
    rte = glue.cell_config("rte", "fish", 1, args)
    assert rte.data.dir == str(tmp_path / "glue" / "RTE")  # other tasks: untouched
    no_dir = glue.parse_args(["--train_subset", "sst2=10"])
    with pytest.raises(SystemExit, match="--glue_dir"):
        glue.cell_config("sst2", "fish", 0, no_dir)


def test_estimate_uses_finished_cells_then_a_fallback_rate():
    cells = _state()["cells"]  # every ok cell: 100 s for 10 steps
    assert glue.estimate_cell_s("rte", "fish", 20, 32, cells) == (200.0, "same task and method")
    assert glue.estimate_cell_s("sst2", "full", 5, 32, cells) == (50.0,
                                                                  "same method, other tasks")
    assert glue.estimate_cell_s("rte", "sift", 1, 32, cells)[1] == "same task, other methods"
    # a step timed on another task counts in proportion to the sequence lengths
    rte_length = glue.recorded_length({"task": "rte"})
    assert glue.estimate_cell_s("sst2", "full", 5, 32, cells, rte_length // 2)[0] == \
        pytest.approx(25.0)
    sec, basis = glue.estimate_cell_s("sst2", "sift", 10, 32, {})
    assert basis == "fallback rate"
    assert sec == glue.FALLBACK_CELL_OVERHEAD_S + 320 / glue.FALLBACK_EX_PER_S


def test_quick_defaults_and_explicit_flags():
    from fishjax.methods import available_methods

    args = glue.parse_args(["--quick"])
    assert (args.tasks, args.seeds, args.out) == ("rte", "0", glue.QUICK_OUT)
    assert set(args.methods.split(",")) <= set(available_methods())
    assert "fish" in args.methods.split(",")
    assert args.set[:len(glue.QUICK_OVERRIDES)] == list(glue.QUICK_OVERRIDES)
    args = glue.parse_args(["--quick", "--methods", "full", "--out", "/tmp/x", "--set",
                            "train.batch_size=16"])
    assert (args.methods, args.out, args.set[-1]) == ("full", "/tmp/x", "train.batch_size=16")
    plain = glue.parse_args([])
    assert (plain.tasks, plain.methods, plain.seeds, plain.out, plain.set) == (
        "rte", "full", "0", glue.DEFAULT_OUT, [])
    config = glue.cell_config("rte", "fish", 0, args)
    assert config.data.max_train_samples == 640 and config.train.num_epochs == 1.0
    assert glue.planned_steps(config, "rte") == 40  # 640 examples, batch 16, 1 epoch


def test_report_reads_the_committed_results_format():
    """The running grid's results.json (read only) still renders."""
    path = os.path.join(REPO, "benchmarks", "results", "glue", "results.json")
    if not os.path.exists(path):
        pytest.skip("no committed results")
    table = glue.results_table(json.load(open(path)))
    assert table.startswith("| method | ")


def test_method_overrides_put_sift_on_the_common_budget():
    args = glue.parse_args(["--tasks", "rte", "--methods", "sift,fish", "--set",
                            "train.num_epochs=1"])
    assert glue.cell_overrides("fish", args) == ["train.num_epochs=1"]
    sift = glue.cell_overrides("sift", args)
    assert sift[:-1] == list(glue.METHOD_OVERRIDES["sift"]) and sift[-1] == "train.num_epochs=1"
    config = glue.cell_config("rte", "sift", 0, args)
    assert config.method.sift.rate == 0.0318 and config.method.sift.head_regex == "^classifier/"
    off = glue.parse_args(["--methods", "sift", "--no_method_overrides"])
    assert glue.cell_overrides("sift", off) == []
    # minilm-l6: 6 layers x 4 attention kernels [384, 384] and biases [384], + classifier
    per_tensor = 24 * (int(0.0318 * 384 * 384) + 1) + 24 * (int(0.0318 * 384) + 1)
    assert abs(per_tensor + 770 - 113_570) / 113_570 < 0.001


def test_estimate_prints_and_runs_nothing(tmp_path, monkeypatch, capsys):
    def no_run(*a, **k):
        raise AssertionError("--estimate must not run cells")

    monkeypatch.setattr(glue, "run_cell", no_run)
    basis = tmp_path / "basis.json"
    basis.write_text(json.dumps({"cells": {"rte-full-s0": _cell(
        "rte", "full", 0, 0.6, 1000, wall_s=200.0, total_steps=10)}}))
    glue.main(["--estimate", "--glue_dir", _rte_folder(tmp_path), "--tasks", "rte",
               "--methods", "full", "--seeds", "0,1", "--out", str(tmp_path / "out"),
               "--estimate_from", str(basis), "--set", "train.num_steps=5"])
    # 2 cells x 5 steps x 20 s/step from the basis cell.
    assert "expected wall time: 3m20s for 2 cells" in capsys.readouterr().out
    assert not (tmp_path / "out" / "results.json").exists()


def test_compare_counts_identical_and_lists_differing_cells(tmp_path, capsys):
    a = _state()
    b = json.loads(json.dumps(a))
    b["cells"]["rte-full-s1"]["final"]["accuracy"] = 0.57
    del b["cells"]["mrpc-fish-s0"]
    cmp = glue.compare_results(a, b)
    assert cmp["shared"] == 3 and cmp["same"] == 2
    assert [round(x, 6) for x in cmp["differ"]["rte-full-s1"]] == [56.0, 57.0]
    (tmp_path / "results.json").write_text(json.dumps(a))
    (tmp_path / "other.json").write_text(json.dumps(b))
    glue.main(["--out", str(tmp_path), "--compare", str(tmp_path / "other.json")])
    out = capsys.readouterr().out
    assert "3 cells in both" in out and "2 with the same main dev score" in out
    assert "rte-full-s1: 56.00 vs 57.00 (+1.00)" in out
