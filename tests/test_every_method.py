"""One test over every registered method and both model families (a tiny encoder on the
quickstart sample, a tiny decoder on the instruction sample), with no per-method code:
setup, two jitted train
steps, the method's export (its `Artifact`s and, where it has one, the merged Hugging Face
folder), reloaded from disk, and the reloaded model's outputs equal to the trained one's.
Then the bytes of each written file's header (and of the mask file, if any) are changed in
turn, all of them for one method per file kind (`EXHAUSTIVE`), 64 seeded ones for the
others: each change is refused on load with one line.

A method registered later is covered here without writing a new test.
"""

from __future__ import annotations

import os
import shutil

import jax
import numpy as np
import pytest

from benchmarks.common.tiny_model import make_tiny_config, make_tiny_decoder_config
from fishjax.artifacts.mask_file import MASK_FILE, read_mask
from fishjax.core.errors import FishjaxError
from fishjax.core.safetensors_io import header_end, read_tensors
from fishjax.methods import available_methods
from fishjax.models import load_model
from fishjax.objectives import make_apply_fn
from fishjax.train.checkpoints import Checkpoints
from fishjax.train.trainer import Trainer


def _outputs(apply_fn, params, batch) -> np.ndarray:
    return np.asarray(jax.jit(apply_fn)(params, batch))


# Methods whose files get every header byte changed: between them every file kind (mask,
# delta, PEFT, profile, export); the other methods' files (the same kinds, through their
# own loaders) get 64 seeded bytes each, to keep the suite's time.
EXHAUSTIVE = ("fish", "sift", "lora", "xpeft")


def assert_every_header_byte_is_refused(path: str, load, folder, beside=(),
                                        sample: int | None = None) -> int:
    """Changes each byte of a safetensors file's header in turn (length prefix, tensor
    table, metadata, seal; `sample`: that many seeded bytes): `load(copy)` must raise a
    fishjax error of one line (the copy in `folder`, with copies of the files `beside`).
    Returns how many bytes were tried."""
    data = open(path, "rb").read()
    end = header_end(data)
    folder.mkdir()
    for other in beside:
        shutil.copyfile(other, folder / os.path.basename(other))
    copy = str(folder / os.path.basename(path))
    shutil.copyfile(path, copy)
    load(copy)  # the intact copy loads: a refusal below is the changed byte's doing
    where = range(end) if sample is None or sample >= end else sorted(
        np.random.default_rng(0).choice(end, sample, replace=False))
    for i in where:
        damaged = bytearray(data)
        damaged[i] = (damaged[i] + 1) % 256
        with open(copy, "wb") as f:
            f.write(damaged)
        try:
            load(copy)
        except FishjaxError as e:
            assert "\n" not in str(e), str(e)
            continue
        raise AssertionError(f"{path}: header byte {i} changed "
                             f"({data[i]:#04x} -> {damaged[i]:#04x}) and it still loaded")
    return len(where)


# A method that trains only the task head has nothing to train on a causal LM (a one-line
# error says so).
NOT_ON_DECODERS = ("head_only",)


@pytest.mark.parametrize("name", available_methods())
@pytest.mark.parametrize("family", ["encoder", "decoder"])
def test_method_trains_exports_and_reloads(name, family, tiny_model_dir, tiny_decoder_dir,
                                           tmp_path):
    if family == "encoder":
        config = make_tiny_config(tiny_model_dir, str(tmp_path / "cache"))
    else:
        config = make_tiny_decoder_config(tiny_decoder_dir, str(tmp_path / "cache"))
    config.method.name = name
    if family == "decoder" and name in NOT_ON_DECODERS:
        with pytest.raises(FishjaxError) as e:
            Trainer(config, str(tmp_path / "run"))
        assert "\n" not in str(e.value)
        return
    config.train.num_steps = 2
    config.train.export = True
    workdir = str(tmp_path / "run")
    trainer = Trainer(config, workdir)
    initial = jax.device_get(trainer.state.trainable)
    results = trainer.run()
    assert results["step"] == 2
    assert trainer.train_step._cache_size() == 1  # both steps ran one jitted program
    changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(a) != b)), initial,
                                     jax.device_get(trainer.state.trainable))
    assert any(jax.tree_util.tree_leaves(changed)), f"{name}: two steps changed nothing"

    ckpt = Checkpoints(workdir)
    try:
        kept = ckpt.restore_best(trainer.state.trainable)
    finally:
        ckpt.close()
    kept = trainer.state.trainable if kept is None else kept
    batch = next(trainer.epoch_batches(0))
    apply_fn = trainer.apply_fn
    # What the run may ship: the trained model, and what the method deploys if it differs.
    shipped = [trainer.setup.dense_params(kept)]
    if trainer.setup.deployed is not None:
        shipped.append(trainer.setup.deployed(kept))
    expected = [_outputs(apply_fn, p, batch) for p in shipped]

    head_size = trainer.objective.head_size
    pretrained = load_model(config.model.name, head_size, key=jax.random.PRNGKey(7)).params
    reloaded = {}
    for artifact in trainer.setup.artifacts:
        path = results["artifacts"][artifact.name]
        if artifact.load is not None:
            reloaded[artifact.name] = _outputs(apply_fn, artifact.load(path, pretrained), batch)
    if trainer.setup.exportable:
        model = load_model(results["export_dir"], head_size, key=jax.random.PRNGKey(7))
        assert not model.load_report.newly_initialized, model.load_report
        reloaded["hf_export"] = _outputs(make_apply_fn(model.module, trainer.objective),
                                         model.params, batch)
    assert reloaded, f"{name} ships nothing that reloads"
    # Every byte of what the run wrote is sealed: a changed header byte is refused.
    sample = None if name in EXHAUSTIVE and family == "encoder" else 64
    for artifact in trainer.setup.artifacts:
        if artifact.load is not None:
            assert_every_header_byte_is_refused(
                results["artifacts"][artifact.name],
                lambda p, load=artifact.load: load(p, pretrained), tmp_path / artifact.name,
                sample=sample)
    if os.path.exists(os.path.join(workdir, MASK_FILE)):
        assert_every_header_byte_is_refused(
            os.path.join(workdir, MASK_FILE), read_mask, tmp_path / "mask", sample=sample)
    if trainer.setup.exportable:  # the weights, bound to the config.json beside them
        export = results["export_dir"]
        assert_every_header_byte_is_refused(
            os.path.join(export, "model.safetensors"), lambda p: read_tensors(p, FishjaxError),
            tmp_path / "export", beside=[os.path.join(export, "config.json")], sample=sample)
        weights = shutil.copyfile(os.path.join(export, "model.safetensors"),
                                  tmp_path / "export" / "model.safetensors")
        config_json = tmp_path / "export" / "config.json"
        config_json.write_text(config_json.read_text().replace('"hidden_act"', '"hidden_acT"'))
        with pytest.raises(FishjaxError, match="is not the config exported"):
            read_tensors(str(weights), FishjaxError)
    for what, got in reloaded.items():
        # Tight: the tiny model's outputs are small (|out| ~ 0.02) and an adapter bank moves
        # them by ~1e-6; a reload differs from training only by float rounding.
        close = [np.allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
                 for want in expected]
        assert any(close), f"{name}: {what} reloaded gives other outputs"
        want = expected[close.index(True)]
        np.testing.assert_array_equal(np.argmax(got, -1), np.argmax(want, -1))
