"""Fine-tune a pretrained encoder with fishjax.

  python train.py --config=configs/quickstart.py --workdir=/tmp/quickstart
  python train.py --config=configs/glue.py:rte --workdir=/tmp/rte \\
      --config.data.dir=../shared/data/glue/RTE --config.method.name=fish
  python train.py --list=methods        # also: configs, tasks, fields

A workdir holds one run: rerunning the same command resumes it; another config there is
an error unless --overwrite (which moves the old run aside). Errors about the input
(config, data, files, a diverged run) print one line and exit with status 2 (--debug: the
traceback). All logic lives in `fishjax.train.trainer.train_and_evaluate(config, workdir)`.
"""

import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from fishjax.train import cli

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
# `--help` shows the config fields with their comments (absl prints this docstring).
__doc__ = (__doc__ + "\n" + cli.fields_help(os.path.join(CONFIGS_DIR, "default.py"))
           + "\n").replace("%", "%%")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and exports.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "If the workdir holds a run of another config, move it to "
    "<workdir>.old-<time> (never deleted) and start this one.")
_LIST = flags.DEFINE_enum("list", None, list(cli.LISTINGS),
                          "Print the methods, configs, tasks or config fields and exit.")
_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of input errors.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _LIST.value:
        print(cli.listing(_LIST.value, os.path.relpath(CONFIGS_DIR)))
        return 0
    # fishjax's progress at INFO; other libraries (orbax logs every file it writes) at WARNING.
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("fishjax").setLevel(logging.INFO)
    return cli.run(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value,
                   debug=_DEBUG.value)


if __name__ == "__main__":
    sys.exit(app.run(main))
