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
    "lora_fish": ("lora_fish", {"peft.fisher_after_warmup": False}),  # scored at init
    "lora_fish_warmup": ("lora_fish", {"peft.fisher_after_warmup": True,
                                       "peft.warmup_steps": 4}),
    "lora_fish_random": ("lora_fish", {"peft.selection": "random"}),
    "dora": ("dora", {}),
    "adapter_fish": ("adapter_fish", {"peft.fisher_after_warmup": False}),
}

# short name -> file in the workdir
FILES = {"mask": "mask.safetensors", "delta": "delta.safetensors", "peft": "peft.safetensors",
         "adapter_model": "peft_adapter/adapter_model.safetensors",
         "adapter_config": "peft_adapter/adapter_config.json"}

PINNED: dict[str, dict[str, str]] = {
    "adapter_fish": {
        "mask": "784a3a90fc01eb04201d62ca1be726ed8c3fb624832cde92a1a383673b3a58e8",
        "peft": "1f522c5572f4dd598fdff12109459e5c38503b88d2b80e4d89a9783997d11293",
    },
    "bitfit": {
        "mask": "cc657a6e5240dfb75bef5cbddc80e8840bf8d8c54f6aac38b893e2cbcdc9780e",
    },
    "dora": {
        "peft": "3f0f6ea83f3810821dfeaeabc933ed6c360b9a71aeb856cd79ce08186b855560",
        "adapter_model": "75b030e6b82d776ffa96ff938c82751264ac4ea67cd0bd7b0b06678ed45d28ff",
        "adapter_config": "2099adb30866de26ead457e4ae9629de317068217baec4846923b2911790f674",
    },
    "fish": {
        "mask": "a0b47c201b3b5a5e12f8940ea450026030b88671423259d7751c78e83d4520db",
    },
    "fish_sparse": {
        "mask": "a0b47c201b3b5a5e12f8940ea450026030b88671423259d7751c78e83d4520db",
        "delta": "783688cd05cd11a6436a0977d842e446eafcb554185fba91483a314dd90f6833",
    },
    "ird": {
        "mask": "54420f7e0deb2c64bddf2c5695f41ec56932bbff9ed3a620ef876dc0839d3da0",
    },
    "lora": {
        "peft": "b562bdb53d951ebd10cbdcc2210d7c69d3ab3eb3d1410537c04d7f895199b421",
        "adapter_model": "c2fb38379248e7f37d9397054b288609d54395232ca0cec71e1994cdfa958317",
        "adapter_config": "0613da557e0c2a1b95c4a01f71fd583cc2513a9d9a06ff9f68029e887b275c98",
    },
    "lora_fish": {
        "mask": "881be1329082fe26280744c8988b1434159b586798a023983578d79606b16440",
        "peft": "887c732273f59f506a605cad81805e462be0bacb6c769a9a0872273c08242a13",
        "adapter_model": "bbf977ab9b5d354d1fa7311da19ff089dd6d5ad3b16557416b664a08b34e70f1",
        "adapter_config": "759a35d92ed6ec7a4417a0e20a0aba95f9b5824b9ed520fb397b09b7cab9a1f9",
    },
    "lora_fish_random": {
        "mask": "803379307ccec841fb9ce1eb4e08ec852622cef1991f734b1d2721148261a0f3",
        "peft": "f17ba6992e4ef129ee51599ef307ead734ff6972e9b7b883f52dee0640029d40",
        "adapter_model": "bbf977ab9b5d354d1fa7311da19ff089dd6d5ad3b16557416b664a08b34e70f1",
        "adapter_config": "759a35d92ed6ec7a4417a0e20a0aba95f9b5824b9ed520fb397b09b7cab9a1f9",
    },
    "lora_fish_warmup": {
        "mask": "1829b99af347660f570606866d349faab5d9c56e17aec173f12d65d457f38655",
        "peft": "887c732273f59f506a605cad81805e462be0bacb6c769a9a0872273c08242a13",
        "adapter_model": "bbf977ab9b5d354d1fa7311da19ff089dd6d5ad3b16557416b664a08b34e70f1",
        "adapter_config": "759a35d92ed6ec7a4417a0e20a0aba95f9b5824b9ed520fb397b09b7cab9a1f9",
    },
    "random_mask": {
        "mask": "8079326c50ce420d7c1b4fbaa3fd6a501f03d282e0b99fdf8fd68a6782c83a44",
    },
    "sift": {
        "mask": "780ed018a1ce9f8a5e9f865538ff91e3c275c39ac1ff45a1609f3e1fde8821d3",
        "delta": "c1740d6bc3ef254ba507b8117f1aa6b0200d1e409150a617ea1701c03bc9a350",
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
