"""The mask, delta and PEFT files of a fixed seed are pinned byte for byte.

Each method's selection runs on the tiny random BERT (same seed, same data) and writes its
files: the mask (`mask.safetensors`), the sparse increment (`delta.safetensors`), the PEFT
tree (`peft.safetensors`) and PEFT's adapter folder. Their sha256 are pinned here: a change
of layout, selection or file format that alters one byte fails. The files are written from
the method's initial trainable tree (no training step), so what is pinned is the selection,
the initialisation and the format, not the rounding of an optimizer on one CPU.

To re-pin after a deliberate format change, run with FISHJAX_PRINT_HASHES=1 and say why in
the commit.
"""

from __future__ import annotations

import hashlib
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
        "mask": "5cbf1d104945c9a715a7982374895a777d8216e221227dca26831a8866c1b465",
        "peft": "b88a3d4c1a3edf04fd351ca1f5f3883344d21ad7f70989a8f99a3329cc4d6751",
    },
    "bitfit": {
        "mask": "3e635469e4e51018182aaffae4f323ab2113bf7ef9c77bad319962bfbff3ff6f",
    },
    "dora": {
        "peft": "8599e3ab5d8a55b4880abf63b02ce9981fb5762309b392d2666428a4a1ef0e46",
        "adapter_model": "c4ff479803f2d756b0324f404acf91bb6331097685d9f4c3e928040fe0312869",
        "adapter_config": "ef5fb3e1aee5c51967c4a14c5126d3cded141abd6aa2a10a02efd810803e034f",
    },
    "fish": {
        "mask": "99bbfe4082e415db2296de68592eb1093c4540260ed468fb467a0d5e48d6a7e3",
    },
    "fish_sparse": {
        "mask": "99bbfe4082e415db2296de68592eb1093c4540260ed468fb467a0d5e48d6a7e3",
        "delta": "d14fd432f7ba524fb4d5567d1ffd1c1da4c267e404676f819a34d3874c90a5f4",
    },
    "ird": {
        "mask": "1ec8b52767df1f3c16a91912b830c3d74c191df51c924b1db9e2a409029c961a",
    },
    "lora": {
        "peft": "51bc6964967abfc3b135e5d76b4865f6764d34f787edd3744007f93ecfd37f3b",
        "adapter_model": "d8897d6f4fc54116f244cb0f6eee96970e4629ea368302390e4ff5f5b0899517",
        "adapter_config": "351bbde492fb59eb75d94abff6e904552126fa046b640591483cab34bd74d487",
    },
    "lora_fish": {
        "mask": "27e91e20c6db70c7ba00a8671a6de3364b479d1a2f4e5c23d6d86c41f5e9ae4e",
        "peft": "0379928e165e7a3c3e9a97f7001497432071228f16d345b63a9efca085477549",
        "adapter_model": "1a8f8dd3d74a6f85bab9c0113797053c67858cf75e7d8353db1b1291767e934d",
        "adapter_config": "a41a90ad1fd581c9589dae1c6155369644ad0e947cb2d5413b7573ee0d5872fa",
    },
    "lora_fish_random": {
        "mask": "a9c4aa84b2d035251851584a66e06041c57ab7606922a16b4a1f7687a373c4c5",
        "peft": "c5ef681279b26115ade80d6897b0ab712997abb6035cafedcd5ef9c513d7020d",
        "adapter_model": "1a8f8dd3d74a6f85bab9c0113797053c67858cf75e7d8353db1b1291767e934d",
        "adapter_config": "a41a90ad1fd581c9589dae1c6155369644ad0e947cb2d5413b7573ee0d5872fa",
    },
    "lora_fish_warmup": {
        "mask": "ae51ce68439afdacbbf53c5c9ac57d5fea818db432526e9121e6bf0365a39b85",
        "peft": "0379928e165e7a3c3e9a97f7001497432071228f16d345b63a9efca085477549",
        "adapter_model": "1a8f8dd3d74a6f85bab9c0113797053c67858cf75e7d8353db1b1291767e934d",
        "adapter_config": "a41a90ad1fd581c9589dae1c6155369644ad0e947cb2d5413b7573ee0d5872fa",
    },
    "random_mask": {
        "mask": "88319cc5f9e4f620ee88c4466de9ad70771f5802b6c58d537f693c5fdb6ad970",
    },
    "sift": {
        "mask": "ceb061537c33ba0c7657e4b21cc2f7999dd91fc21e8f185a16583aaf57a9c6d1",
        "delta": "e643055680f82f14bc116cabdea87231f5c054436c5eccb0d0efde5034e7464a",
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
    if trainer.setup.save_artifacts is not None:
        trainer.setup.save_artifacts(jax.device_get(trainer.state.trainable), workdir)


def _hashes(workdir: str) -> dict[str, str]:
    out = {}
    for name, file in FILES.items():
        path = os.path.join(workdir, file)
        if os.path.exists(path):
            with open(path, "rb") as f:
                out[name] = hashlib.sha256(f.read()).hexdigest()
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
