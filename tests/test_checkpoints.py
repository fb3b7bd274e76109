"""Best-checkpoint bookkeeping: only finite improvements replace the best."""

from __future__ import annotations

import numpy as np

from fishjax.train.checkpoints import TRAIN_TIME_FILE, Checkpoints


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


def test_train_time_is_kept_per_checkpoint_and_survives_a_bad_record(tmp_path):
    ckpt = Checkpoints(str(tmp_path))
    state = {"w": np.arange(4.0)}
    ckpt.save(5, state, 1.5)
    ckpt.save(10, state, None)  # unknown (a run that resumed a workdir without the record)
    assert ckpt.train_s_at(5) == 1.5 and ckpt.train_s_at(10) is None
    assert ckpt.train_s_at(7) is None
    ckpt.save(15, state, 4.0)  # only the kept checkpoints' times stay
    assert ckpt.train_s_at(5) is None and ckpt.train_s_at(15) == 4.0
    (tmp_path / TRAIN_TIME_FILE).write_text("[1, 2")
    assert ckpt.train_s_at(15) is None  # a broken record: unknown, with a warning
    ckpt.close()
