"""benchmarks/glue.py: grid, resumability, crash isolation, Markdown table from the JSON."""

from __future__ import annotations

import json

from benchmarks import glue


def _rte_folder(tmp_path):
    d = tmp_path / "glue" / "RTE"
    d.mkdir(parents=True)
    header = "index\tsentence1\tsentence2\tlabel\n"
    rows = [f"{i}\tthe movie is {'great' if i % 2 else 'bad'} .\tit is good .\t"
            f"{'entailment' if i % 2 else 'not_entailment'}\n" for i in range(24)]
    (d / "train.tsv").write_text(header + "".join(rows))
    (d / "dev.tsv").write_text(header + "".join(rows[:8]))
    return str(tmp_path / "glue")


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
    scores = [100 * glue.score_of(cells[f"rte-full-s{s}"]) for s in (0, 1)]
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
