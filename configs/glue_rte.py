"""GLUE RTE with FISH Mask at 0.5% of the parameters: the mission's documented command.

  python train.py --config=configs/glue_rte.py --workdir=/tmp/rte \\
      --config.data.dir=../shared/data/glue/RTE

RTE's settings from `configs/glue.py` (`--config=configs/glue.py:rte` is the same with
`full`). Without `data.dir` the data comes from the Hugging Face hub (nyu-mll/glue, needs
network). Pick another method with --config.method.name=<name>.

Measured (minilm-l6, seed 0): full fine-tuning 0.581 dev accuracy in 6m41s on 2 CPU cores
(README "GLUE"); FISH 0.5%: 52.3 ± 0.3 over 3 seeds (README "Results").
"""

from configs import glue


def get_config():
    config = glue.get_config("rte")
    # FISH Mask: Fisher over 1024 examples, global top-k, 0.5% of all parameters trained.
    config.method.name = "fish"
    config.method.keep_ratio = 0.005
    return config
