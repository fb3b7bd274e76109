"""Seals over every byte (`fishjax.core.integrity`) on JSON files, files from before seals,
and a mask refused on another base model. (Every header byte of every method's safetensors
files is changed in turn in `tests/test_every_method.py`.)"""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.common.tiny_model import build_tiny_model_dir
from fishjax.core.errors import DataError, MaskError
from fishjax.core.integrity import SEAL_KEY, SEALED_KEY, check_seal
from fishjax.core.io import atomic_write_json, read_json
from fishjax.core.safetensors_io import read_tagged
from fishjax.data.row_split import load_row_split, make_row_split, save_row_split
from fishjax.train.trainer import Trainer


def test_every_byte_of_a_sealed_json_file_is_checked(tmp_path):
    path = tmp_path / "doc.json"
    atomic_write_json(path, {"rows": [1, 2, 3], "rate": 1e-5, "name": "x"}, sealed=True)
    data = path.read_bytes()
    assert read_json(path, DataError) == {"rows": [1, 2, 3], "rate": 1e-5, "name": "x"}
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] = (damaged[i] + 1) % 256
        path.write_bytes(bytes(damaged))
        with pytest.raises(DataError, match="is damaged|not valid JSON"):
            read_json(path, DataError, "row split")


def test_files_from_before_seals_still_load(tmp_path):
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"train": [0, 1, 2]}))
    assert check_seal(plain.read_bytes()) is False
    assert load_row_split(str(plain)).train.tolist() == [0, 1, 2]  # written by hand
    # A sealed file whose seal key was renamed is damaged, not "from before seals".
    sealed = tmp_path / "sealed.json"
    atomic_write_json(sealed, {"a": 1}, sealed=True)
    sealed.write_text(sealed.read_text().replace(SEAL_KEY, SEAL_KEY[:-1] + "7"))
    with pytest.raises(DataError, match="integrity entries are damaged"):
        read_json(sealed, DataError)
    assert SEALED_KEY in sealed.read_text()


def test_row_splits_are_sealed(tmp_path):
    path = save_row_split(str(tmp_path / "rows.json"), make_row_split([0, 1, 2, 3], flip=[1]))
    assert json.load(open(path))[SEAL_KEY]
    assert load_row_split(path).flip.tolist() == [1]
    text = open(path).read().replace("[\n    1\n  ]", "[\n    2\n  ]")
    open(path, "w").write(text)
    with pytest.raises(DataError, match="is damaged"):
        load_row_split(path)


def test_a_mask_file_of_another_base_is_refused(tiny_config, tmp_path):
    tiny_config.method.name = "fish"
    tiny_config.method.fisher.num_samples = 16
    first = Trainer(tiny_config, str(tmp_path / "first"))
    mask_path = os.path.join(first.workdir, "mask.safetensors")
    _, meta = read_tagged(mask_path, "fishjax_mask", MaskError, "mask")
    assert len(meta["base_fingerprint"]) == 64
    # The same file on the same base, as method.mask_file: accepted.
    tiny_config.method.mask_file = mask_path
    again = Trainer(tiny_config, str(tmp_path / "again"))
    entries = [t.setup.summary()["trainable_entries"] for t in (first, again)]
    assert entries[0] == entries[1]
    # Same shapes, other weights: refused.
    other = build_tiny_model_dir(str(tmp_path / "other"), seed=1)
    tiny_config.model.name = other
    with pytest.raises(MaskError, match="selected on another base model"):
        Trainer(tiny_config, str(tmp_path / "other-run"))
