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
        "mask": "377205ce77d86e3297d9e6983782be7b774e5281f5bb1868574a8705fa282a0c",
        "peft": "fe4674520b56b14cd876149f5d19dd8dc8e888c03467cd5e7e1baf2adf73171b",
    },
    "bitfit": {
        "mask": "a4efe2b43078602fb6d315c076cae19ece6bc68fd041f3705954f626f6d0c7ee",
    },
    "dora": {
        "peft": "5ede806b9077553761b4abf92646e8e77070628c24e888eca3129e5775f4a673",
        "adapter_model": "c4ff479803f2d756b0324f404acf91bb6331097685d9f4c3e928040fe0312869",
        "adapter_config": "2099adb30866de26ead457e4ae9629de317068217baec4846923b2911790f674",
    },
    "fish": {
        "mask": "17e9091c97d01c936bd8edde98aaf95a493a83c7fbaf65f3f25d3f59b3d2c481",
    },
    "fish_sparse": {
        "mask": "17e9091c97d01c936bd8edde98aaf95a493a83c7fbaf65f3f25d3f59b3d2c481",
        "delta": "97889761e96f484c8018012174aeeb0271ecde6706b7c13f36f9abf41708c967",
    },
    "ird": {
        "mask": "a4faf070fe034fe019b65502235bc5d79a01fadd4bd880f72f66a4ef1c313ab3",
    },
    "lora": {
        "peft": "cbe01a8c27cd5fe942e01ac3f09889f666498cbb6e7e6391c523b1e27f5ff70e",
        "adapter_model": "d8897d6f4fc54116f244cb0f6eee96970e4629ea368302390e4ff5f5b0899517",
        "adapter_config": "0613da557e0c2a1b95c4a01f71fd583cc2513a9d9a06ff9f68029e887b275c98",
    },
    "lora_fish": {
        "mask": "637962ed1dddf746e9a93c6abaa86e20d710a28e6697e137f3fa1a9d6ace6e50",
        "peft": "b439029e8521fff27fe9913ecf915bfc7141d0645f0df22c50ae35e3cf922a75",
        "adapter_model": "1a8f8dd3d74a6f85bab9c0113797053c67858cf75e7d8353db1b1291767e934d",
        "adapter_config": "759a35d92ed6ec7a4417a0e20a0aba95f9b5824b9ed520fb397b09b7cab9a1f9",
    },
    "lora_fish_random": {
        "mask": "aecf0450764491f2dbae89a2933b4c0b20fb839a142cde3f6e89370ce12258e5",
        "peft": "8febfb76c7e274ce1f817f84b41d32fe351fb838549e8063c65a2fe5bac0f65f",
        "adapter_model": "1a8f8dd3d74a6f85bab9c0113797053c67858cf75e7d8353db1b1291767e934d",
        "adapter_config": "759a35d92ed6ec7a4417a0e20a0aba95f9b5824b9ed520fb397b09b7cab9a1f9",
    },
    "lora_fish_warmup": {
        "mask": "1881720423be0b84852c2370537e99d3a5a7146302c9c1b8a792f28721d53ca3",
        "peft": "b439029e8521fff27fe9913ecf915bfc7141d0645f0df22c50ae35e3cf922a75",
        "adapter_model": "1a8f8dd3d74a6f85bab9c0113797053c67858cf75e7d8353db1b1291767e934d",
        "adapter_config": "759a35d92ed6ec7a4417a0e20a0aba95f9b5824b9ed520fb397b09b7cab9a1f9",
    },
    "random_mask": {
        "mask": "f9d7a105cdbd4d5c15a856bcd6d87e810a3a5a43355bb92d6986feb83b77c515",
    },
    "sift": {
        "mask": "7816256b892711e42681be4598cf65c391be078e7993772d0e84390db89b9e65",
        "delta": "0f4b66862e5113409ac89ecd99e47497e0f67a18c3505b060d862327d463849e",
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
