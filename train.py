"""Fine-tune a pretrained model with fishjax.

  python train.py --config=configs/quickstart.py --workdir=/tmp/quickstart
  python train.py --config=configs/glue.py:rte --workdir=/tmp/rte \\
      --config.data.dir=../shared/data/glue/RTE --config.method.name=fish
  python train.py --list=methods        # also: configs, tasks, fields

A workdir holds one run: rerunning the same command resumes it; another config there is
an error unless --overwrite (which moves the old run aside). Errors about the input
(config, data, files, a diverged run) print one line and exit with status 2 (--debug: the
traceback). All logic lives in `fishjax.train.trainer.train_and_evaluate(config, workdir)`.
"""

import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file, e.g. configs/quickstart.py or configs/glue.py:rte; any "
    "field may follow as --config.<field>=<value> (--list=fields).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and exports.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "If the workdir holds a run of another config, move it to "
    "<workdir>.old-<time> (never deleted) and start this one.")
_LIST = flags.DEFINE_enum("list", None, ["methods", "configs", "tasks", "fields"],
                          "Print the methods, configs, tasks or config fields and exit.")
_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of input errors.")
_OWN_FLAGS = (_CONFIG, _WORKDIR, _OVERWRITE, _LIST, _DEBUG)


def short_help() -> str:
    """This docstring and this script's flags (`--help`): no fishjax import, so instant."""
    rows = [f"  --{holder.name}: {flags.FLAGS[holder.name].help}" for holder in _OWN_FLAGS]
    return (__doc__ + "\nflags:\n" + "\n".join(rows) + "\n  --helpfull: also every config "
            "field with its comment and default\n\nMethods: --list=methods and README "
            "\"Methods\"; configs: --list=configs (the configs/ folder).")


if __name__ == "__main__" and {"-h", "--help", "--helpshort", "-?"} & set(sys.argv[1:]):
    print(short_help())
    sys.exit(0)

# Importing fishjax loads jax, flax and transformers (seconds): after --help, not before.
from fishjax.train import cli  # noqa: E402


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _LIST.value:
        print(cli.listing(_LIST.value, os.path.relpath(CONFIGS_DIR)))
        return 0
    # Other libraries (orbax logs every file it writes) at WARNING; fishjax's progress as
    # plain timed lines on stderr (cli.run), its closing summary on stdout.
    absl_logging.set_verbosity(absl_logging.WARNING)
    return cli.run(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value,
                   debug=_DEBUG.value)


if __name__ == "__main__":
    if "--helpfull" in sys.argv[1:]:
        print(short_help() + "\n\n" + cli.fields_help(os.path.join(CONFIGS_DIR, "default.py")))
        sys.exit(0)
    sys.exit(app.run(main, flags_parser=cli.parse_flags))
