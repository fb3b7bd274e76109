"""The notebooks are code: each runs top to bottom, headless, on quick settings.

The cell tagged `parameters` is replaced by the quick values below (the tiny random model,
the bundled task, a few steps), papermill-style; every other cell runs as committed, from
a folder outside the checkout (the notebooks must find `configs` themselves). Any error
fails the test; a few printed lines are checked too. Outputs are stripped in git.
"""

from __future__ import annotations

import os

import nbformat
import pytest

nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "notebooks")


def _quick(name: str, model_dir: str, workdir: str) -> str:
    common = f"MODEL = {model_dir!r}\nWORKDIR = {workdir!r}\n"
    return common + {
        "quickstart": "TASK = 'quickstart'\nDATA_DIR = None\nMAX_TRAIN_SAMPLES = 96\n"
                      "MAX_EVAL_SAMPLES = 64\nNUM_EPOCHS = 1.0\nFISHER_SAMPLES = 32\n",
        "methods": "METHODS = ('full', 'fish', 'sift', 'lora')\nKEEP_RATIO = 0.005\n"
                   "MAX_TRAIN_SAMPLES = 64\nNUM_EPOCHS = 1.0\nFISHER_SAMPLES = 32\n",
        "profiles": "POOL_SIZE = 4\nN_TRAIN = 64\nNUM_EPOCHS = 1.0\n",
        "select_sources": "TASK = 'quickstart'\nDATA_DIR = None\nGROUPS, NOISY = 4, 1\n"
                          "NUM_SUBSETS = 32\nCALIBRATION_RUNS = 1\nPROJECT_DIM = 16\n"
                          "MAX_TRAIN_SAMPLES = 96\n",
    }[name]


# What each notebook must print (beyond running without error).
EXPECTED = {
    "quickstart": ["after training:", "trained entries:", "layer_0"],
    "methods": ["FISH mask: accuracy", "gradient entries:", "entries with a nonzero update:",
                "sift"],
    "profiles": ["contrarian", "one profile's mask:", "profile files:"],
    "select_sources": ["kept:", "noisy AUROC"],
}


def _text(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", ""))
            out.append(o.get("data", {}).get("text/plain", ""))
    return "\n".join(out)


def test_every_notebook_is_listed_and_stripped():
    names = sorted(f[:-6] for f in os.listdir(NOTEBOOKS) if f.endswith(".ipynb"))
    assert names == sorted(EXPECTED)
    for name in names:
        nb = nbformat.read(os.path.join(NOTEBOOKS, f"{name}.ipynb"), as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), (
            f"{name}: outputs are not stripped")
        assert "--no-deps" in code[0].source, f"{name}: the first cell is not the install"
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name}: needs exactly one cell tagged `parameters`"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_on_quick_settings(name, tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("ipykernel")
    nb = nbformat.read(os.path.join(NOTEBOOKS, f"{name}.ipynb"), as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = _quick(name, tiny_model_dir, str(tmp_path / "work"))
    monkeypatch.setenv("FISHJAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    outside = tmp_path / "elsewhere"  # not the checkout: `configs` must still be found
    outside.mkdir()
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(outside)}})
    client.execute()  # raises CellExecutionError on any error
    text = _text(nb)
    for expected in EXPECTED[name]:
        assert expected in text, f"{name}: {expected!r} not in its output"


def test_for_accelerator_is_config_only_and_leaves_cpu_alone():
    from configs import quickstart
    from fishjax.train.notebook import PER_DEVICE_BATCH, Runtime, for_accelerator

    config = quickstart.get_config()
    tpu = Runtime("tpu", "TPU v5 lite", 8, 1, {"data": 8, "model": 1})
    cpu = Runtime("cpu", "cpu", 1, 1, {"data": 1, "model": 1})
    on_tpu, on_cpu = for_accelerator(config, tpu), for_accelerator(config, cpu)
    assert on_tpu.model.dtype == "bfloat16" and on_tpu.train.batch_size == 8 * PER_DEVICE_BATCH
    assert on_tpu.train.batch_size % tpu.mesh_shape["data"] == 0
    assert on_cpu.to_dict() == config.to_dict()
    assert config.model.dtype == "float32"  # the config passed in is not modified


def test_density_by_layer_groups_and_orders_the_layers():
    import numpy as np

    from fishjax.train.notebook import density_by_layer

    mask = {"classifier/kernel": np.ones((2, 2), bool),
            "encoder/layer_10/output/dense/kernel": np.zeros((4,), bool),
            "encoder/layer_2/output/dense/kernel": np.array([True, False, False, False]),
            "embeddings/word_embeddings/embedding": np.array([True, True])}
    want = {"embeddings": 1.0, "layer_2": 0.25, "layer_10": 0.0, "classifier": 1.0}
    assert density_by_layer(mask) == want
    nested: dict = {}  # the same mask as a tree shaped like the params
    for path, m in mask.items():
        node = nested
        *parents, leaf = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = m
    assert density_by_layer(nested) == want
