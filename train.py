"""Fine-tune a pretrained encoder with fishjax.

  python train.py --config=configs/quickstart.py --workdir=/tmp/quickstart
  python train.py --config=configs/glue_rte.py --workdir=/tmp/rte \\
      --config.data.dir=../shared/data/glue/RTE --config.method.name=full

All logic lives in `fishjax.train.trainer.train_and_evaluate(config, workdir)`; this file only
parses flags.
"""

import logging

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from fishjax.train.trainer import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and exports.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # fishjax's progress at INFO; other libraries (orbax logs every file it writes) at WARNING.
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("fishjax").setLevel(logging.INFO)
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
