"""Call 1's check on a lent machine (probe.sh): two 2-step validation cells (fish, sift) of
the tiny encoder on a tiny RTE through glue.py, on whatever device JAX finds; exit 1 if a
cell fails. It needs no model package, data or network."""

import os
import tempfile

from benchmarks.common.tiny_model import build_tiny_model_dir, write_tiny_rte
from benchmarks.grid import glue

root = tempfile.mkdtemp()
model = build_tiny_model_dir(os.path.join(root, "tiny"))
glue_dir = write_tiny_rte(root, 60)
state = glue.main([
    "--select_on", "validation", "--glue_dir", glue_dir, "--tasks", "rte",
    "--methods", "fish,sift", "--seeds", "0", "--model", model,
    "--out", os.path.join(root, "out"), "--train_subset", "none", "--compilation_cache", "",
    "--lr_grid", "fish=1e-3,sift=1e-3", "--set", "model.pooling=mean",
    "--set", "train.export=False", "--set", "train.num_steps=2", "--set", "train.batch_size=8",
    "--set", "data.max_length=32", "--set", "data.buckets=(16, 32)",
    "--set", f"data.cache_dir={root}/cache"])
bad = {k: c.get("error") for k, c in state["cells"].items() if c["status"] != "ok"}
print("PROBE", "ok" if not bad else "FAILED", bad,
      [c.get("device") for c in state["cells"].values()])
raise SystemExit(1 if bad or not state["cells"] else 0)
