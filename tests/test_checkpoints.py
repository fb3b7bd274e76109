"""Best-checkpoint bookkeeping: only finite improvements replace the best."""

from __future__ import annotations

import numpy as np

from fishjax.train.checkpoints import Checkpoints


def test_best_keeps_only_finite_improvements(tmp_path):
    ckpt = Checkpoints(str(tmp_path))
    tree = {"w": np.ones(3, np.float32)}
    assert ckpt.maybe_save_best(1, tree, 0.5, {"accuracy": 0.5})
    assert not ckpt.maybe_save_best(2, tree, float("nan"), {"accuracy": float("nan")})
    assert not ckpt.maybe_save_best(3, tree, 0.4, {"accuracy": 0.4})
    assert ckpt.maybe_save_best(4, {"w": np.full(3, 2.0, np.float32)}, 0.7, {"accuracy": 0.7})
    assert ckpt.best()["step"] == 4
    np.testing.assert_array_equal(ckpt.restore_best(tree)["w"], np.full(3, 2.0))
    ckpt.close()
