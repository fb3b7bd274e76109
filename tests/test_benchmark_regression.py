"""benchmarks/regression/record_quickstart: what counts as the same result."""

import numpy as np
from safetensors.numpy import save_file

from benchmarks.regression.record_quickstart import compare, file_record


def _record(tmp_path, name, tensors, metadata):
    path = str(tmp_path / name)
    save_file(tensors, path, metadata=metadata)
    return {"metrics": {"final_eval": {"accuracy": 0.9}}, "files": {"mask.safetensors":
                                                             file_record(path)}}


def test_same_bytes_and_gained_header_field_are_the_same_result(tmp_path):
    a = _record(tmp_path, "a", {"w": np.arange(4, dtype=np.int32)}, {"seed": "0"})
    b = _record(tmp_path, "b", {"w": np.arange(4, dtype=np.int32)}, {"seed": "0"})
    assert a["files"]["mask.safetensors"]["file_sha256"] == \
        b["files"]["mask.safetensors"]["file_sha256"]
    assert compare(a, b) == []
    gained = _record(tmp_path, "c", {"w": np.arange(4, dtype=np.int32)},
                     {"seed": "0", "base_fingerprint": "x"})
    assert compare(a, gained) == []


def test_changed_tensor_metadata_or_metric_is_reported(tmp_path):
    a = _record(tmp_path, "a", {"w": np.arange(4, dtype=np.int32)}, {"seed": "0"})
    tensor = _record(tmp_path, "b", {"w": np.arange(1, 5, dtype=np.int32)}, {"seed": "0"})
    assert any("tensors differ" in d for d in compare(a, tensor))
    dtype = _record(tmp_path, "c", {"w": np.arange(4, dtype=np.int64)}, {"seed": "0"})
    assert any("tensors differ" in d for d in compare(a, dtype))
    meta = _record(tmp_path, "d", {"w": np.arange(4, dtype=np.int32)}, {"seed": "1"})
    assert any("metadata" in d for d in compare(a, meta))
    metric = dict(a, metrics={"final_eval": {"accuracy": 0.8}})
    assert any("metrics" in d for d in compare(a, metric))
    assert any("missing" in d for d in compare(a, dict(a, files={})))
