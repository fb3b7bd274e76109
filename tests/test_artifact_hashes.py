"""The mask, delta and PEFT files of a fixed seed are pinned byte for byte.

Each method's selection runs on the tiny random BERT (same seed, same data) and writes its
files: the mask (`mask.safetensors`), the sparse increment (`delta.safetensors`), the PEFT
tree (`peft.safetensors`) and PEFT's adapter folder. Their sha256 are pinned here: a change
of layout, selection or file format that alters one byte fails. The files are written from
the method's initial trainable tree (no training step), so what is pinned is the selection,
the initialisation and the format, not the rounding of an optimizer on one CPU.

To re-pin after a deliberate format change, run with FISHJAX_PRINT_HASHES=1 and say why in
the commit. (PEFT's `adapter_config.json` is hashed with its base folder, an absolute path,
replaced by a placeholder.)
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from conftest import make_tiny_config

# method name (as in the grid), config overrides
CASES = {
    "fish": ("fish", {"keep_ratio": 0.05}),
    "random_mask": ("random_mask", {"keep_ratio": 0.05}),
    "bitfit": ("bitfit", {}),
    "ird": ("ird", {"keep_ratio": 0.05, "ird.pool_size": 64, "ird.min_samples": 8}),
    "fish_sparse": ("fish", {"keep_ratio": 0.05, "sparse_storage": True}),
    "sift": ("sift", {"sift.rate": 0.05, "sift.eligible_regex":
                      r"attention/(self/(query|key|value)|output/dense)/kernel$"}),
    "lora": ("lora", {}),
    "lora_fish": ("lora_fish", {}),
    "lora_fish_warmup": ("lora_fish", {"peft.fisher_after_warmup": True,
                                       "peft.warmup_steps": 4}),
    "lora_fish_random": ("lora_fish", {"peft.selection": "random"}),
    "dora": ("dora", {}),
    "adapter_fish": ("adapter_fish", {}),
}

# short name -> file in the workdir
FILES = {"mask": "mask.safetensors", "delta": "delta.safetensors", "peft": "peft.safetensors",
         "adapter_model": "peft_adapter/adapter_model.safetensors",
         "adapter_config": "peft_adapter/adapter_config.json"}

PINNED: dict[str, dict[str, str]] = {
    "adapter_fish": {
        "mask": "2a0dcbe65d4a6816231cbc0668b4e29621928a6a851acb1e00568fbe1da09d0d",
        "peft": "858dc594eb802df78e687dbdced42cba4bc7f6f4fc8f48fbef19dbda0f506acd",
    },
    "bitfit": {
        "mask": "17015b982b71ed69e4edaef01d1f3837fddda4a9adbf6ffe8a643205e5df3fd9",
    },
    "dora": {
        "peft": "091953ec85c4a5b0009246dc5da247a7de3d7108aa3d71f3601530cd0e1b170e",
        "adapter_model": "c4ff479803f2d756b0324f404acf91bb6331097685d9f4c3e928040fe0312869",
        "adapter_config": "2099adb30866de26ead457e4ae9629de317068217baec4846923b2911790f674",
    },
    "fish": {
        "mask": "31269e65806aa42e7994ac68b6809f96fdceebf3759c74c7b4076ce15291446f",
    },
    "fish_sparse": {
        "mask": "64fbaacdccd9b700c8372a79c35f373a77584ea0f5d001f4677be3b9617ab4cb",
        "delta": "bbe0658ed483f07030d369895ea36dd6a1742c2a59d6b36a27f22ca4ecef3e90",
    },
    "ird": {
        "mask": "3edb4d0324037de15352f03d5bb3bdf1ad2396e83c12a27b59f17beca8f876ed",
    },
    "lora": {
        "peft": "010e148afe51d62f5b0fac95e99de1f5469d5c50069702aef1af15b5c367488e",
        "adapter_model": "d8897d6f4fc54116f244cb0f6eee96970e4629ea368302390e4ff5f5b0899517",
        "adapter_config": "0613da557e0c2a1b95c4a01f71fd583cc2513a9d9a06ff9f68029e887b275c98",
    },
    "lora_fish": {
        "mask": "4561280fa15a5df8666520f0fa62e47c6b65725f8cf2549ca652deb97ddead80",
        "peft": "887c732273f59f506a605cad81805e462be0bacb6c769a9a0872273c08242a13",
        "adapter_model": "1a8f8dd3d74a6f85bab9c0113797053c67858cf75e7d8353db1b1291767e934d",
        "adapter_config": "759a35d92ed6ec7a4417a0e20a0aba95f9b5824b9ed520fb397b09b7cab9a1f9",
    },
    "lora_fish_random": {
        "mask": "ce104736141b3a75f7ab516a3b9b58244c6f92b92a13008f5d275cbc605514cf",
        "peft": "ad8a2728c0ff4d5dba6b429472e8ecb49f0a2a590838c9d7208d30a1aa5893c8",
        "adapter_model": "1a8f8dd3d74a6f85bab9c0113797053c67858cf75e7d8353db1b1291767e934d",
        "adapter_config": "759a35d92ed6ec7a4417a0e20a0aba95f9b5824b9ed520fb397b09b7cab9a1f9",
    },
    "lora_fish_warmup": {
        "mask": "2d793efca3cebe60c5bbdefbd27997c22d877b8624880074f51209c35cf49e0a",
        "peft": "3ddbcd0ac18521b7afa014e14f029a20e2998398ce6433df11b812265b5ad351",
        "adapter_model": "1a8f8dd3d74a6f85bab9c0113797053c67858cf75e7d8353db1b1291767e934d",
        "adapter_config": "759a35d92ed6ec7a4417a0e20a0aba95f9b5824b9ed520fb397b09b7cab9a1f9",
    },
    "random_mask": {
        "mask": "8e05ec011f25e63c958a33eaebf83346420869e95f38ec4ae896fec97b809d76",
    },
    "sift": {
        "mask": "463768003b600d25f90b39464eec393e488d3e1bb45c8ae2e716ce8267dc2ea2",
        "delta": "cee988818973f5ca4b37200814717bf7aa9f0004eb5fbc57b9c7198ff68d3505",
    },
}


def _set(config, key: str, value) -> None:
    *parents, leaf = key.split(".")
    node = config.method
    for p in parents:
        node = node[p]
    node[leaf] = value


def write_artifacts(config, workdir: str) -> None:
    """The method's selection and artefact files, as a finished run would write them (from
    its initial trainable tree)."""
    import jax

    from fishjax.train.trainer import Trainer

    trainer = Trainer(config, workdir)
    trainer.setup.save_artifacts(jax.device_get(trainer.state.trainable), workdir)


def _hashes(workdir: str) -> dict[str, str]:
    out = {}
    for name, file in FILES.items():
        path = os.path.join(workdir, file)
        if os.path.exists(path):
            with open(path, "rb") as f:
                data = f.read()
            if name == "adapter_config":  # its base is the model's absolute folder: per machine
                config = json.loads(data)
                assert os.path.isabs(config["base_model_name_or_path"])
                config["base_model_name_or_path"] = "<base folder>"
                data = json.dumps(config, sort_keys=True).encode()
            out[name] = hashlib.sha256(data).hexdigest()
    return out


@pytest.fixture
def stable_model_name(tiny_model_dir, tmp_path, monkeypatch):
    """The tiny model under a fixed relative name: files record the model name."""
    monkeypatch.chdir(tmp_path)
    os.symlink(tiny_model_dir, "tiny-bert")
    return "tiny-bert"


@pytest.mark.parametrize("case", sorted(CASES))
def test_artifact_files_are_pinned(case, stable_model_name, tmp_path):
    method, overrides = CASES[case]
    config = make_tiny_config(stable_model_name, str(tmp_path / "cache"))
    config.method.name = method
    for key, value in overrides.items():
        _set(config, key, value)
    workdir = str(tmp_path / "run")
    write_artifacts(config, workdir)
    got = _hashes(workdir)
    if os.environ.get("FISHJAX_PRINT_HASHES"):
        print(f"PINNED {case!r}: {got!r},")
    assert got, "the method wrote none of the artefact files"
    assert got == PINNED[case]
