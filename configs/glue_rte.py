"""GLUE RTE: fine-tune on RTE, report accuracy on dev.

  python train.py --config=configs/glue_rte.py --workdir=/tmp/rte \\
      --config.data.dir=../shared/data/glue/RTE

Without `data.dir` the data comes from the Hugging Face hub (nyu-mll/glue, needs network).
Pick the method with --config.method.name=<name>.

Measured result: see the README (full fine-tuning of minilm-l6, 3 epochs, 2 CPU cores).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.task = "rte"
    # Longest sequence kept after truncation; the buckets must end at it.
    config.data.max_length = 128
    config.data.buckets = (64, 128)
    config.train.num_epochs = 3.0
    config.train.learning_rate = 3e-05
    return config
