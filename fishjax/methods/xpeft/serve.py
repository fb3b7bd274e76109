"""Serving many X-PEFT profiles from one base model and one frozen bank of adapters.

`ProfileServer` loads the base model and the bank once and keeps each profile as its
mixing weights [slots, 2, N] and its head. A batch whose examples belong to different
profiles runs in one jitted call: the per-example weights and heads are gathered on the
host, and `jax.vmap` over the examples mixes each example's adapters from the bank
(`fishjax.params.xpeft.mix`, an einsum over the bank's axis) and runs the model, the base
weights shared by every example. The compiled call depends only on the batch's shape, so
switching or adding profiles never recompiles.

Example:
  >>> server = ProfileServer.from_files("minilm-l6", "bank.safetensors")
  >>> # or, for profiles on a random pool (no bank file): the pool a profile records
  >>> server = ProfileServer.from_random_pool("minilm-l6", "runs/alice/profile.safetensors")
  >>> server.add_profile("alice", "runs/alice/profile.safetensors")
  >>> server.add_profile("bob", "runs/bob/profile.safetensors")
  >>> server.predict(["great film", "dull"], ["alice", "bob"])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import jax
import numpy as np

from fishjax.artifacts.fingerprint import base_fingerprint
from fishjax.core.errors import PeftError
from fishjax.core.tree import PyTree, flatten_paths, merge_trees, split_tree, unflatten_paths
from fishjax.data import TokenizedSplit, make_batch, text_split, tokenize_split
from fishjax.methods.xpeft.bank_file import Bank, load_bank, rebuild_random_bank
from fishjax.methods.xpeft.profile_file import load_profile
from fishjax.models import LoadedModel, load_model, load_tokenizer
from fishjax.objectives import Objective, SequenceClassification, make_apply_fn
from fishjax.params.xpeft import Profile, mix

log = logging.getLogger("fishjax")


def profile_outputs(apply_fn, base: PyTree, bank: PyTree, weights, head: PyTree, batch):
    """Outputs of one profile (mixing weights + head) on a batch: the model with the mixed
    adapters. Not jitted; `ProfileServer` vmaps it over examples."""
    return apply_fn(merge_trees(base, mix(bank, weights), head), batch)


class ProfileServer:
    """One base model and one bank; profiles added by name (see the module docstring)."""

    def __init__(self, model: LoadedModel, bank: Bank, head_regex: str | None = None,
                 objective: Objective | None = None):
        # The profiles' task: what the model reads and what a prediction is (default: the
        # 2-class classification the bundled profiles are trained on).
        self.objective = SequenceClassification() if objective is None else objective
        head_regex = model.head_regex if head_regex is None else head_regex  # the family's
        head, base = split_tree(model.params, head_regex)
        if not flatten_paths(head):
            raise PeftError(f"head_regex={head_regex!r} matches no parameter of the model")
        self.base_fingerprint = base_fingerprint(base)
        if bank.metadata["base_fingerprint"] != self.base_fingerprint:
            raise PeftError("the bank was trained on another base model than "
                            f"{model.name!r}")
        self.model, self.bank = model, bank
        self._head_paths = sorted(flatten_paths(head))
        self._base = jax.device_put(base)
        self._adapters = jax.device_put(bank.adapters)
        self._profiles: dict[str, tuple[np.ndarray, dict]] = {}
        self._tokenizer = None
        apply_fn = make_apply_fn(model.module, self.objective)

        def one(base, bank, weights, head, example):
            batch = jax.tree_util.tree_map(lambda x: x[None], example)
            return profile_outputs(apply_fn, base, bank, weights, head, batch)[0]

        self._forward = jax.jit(jax.vmap(one, in_axes=(None, None, 0, 0, 0)))

    @classmethod
    def from_files(cls, model_name: str, bank_file: str, pooling: str | None = None,
                   **kwargs) -> ProfileServer:
        """A server for `model_name` (alias, folder or hub id) and a bank file; `pooling`:
        what the classifier reads, as the profiles were trained (`config.model.pooling`)."""
        bank = load_bank(bank_file)
        objective = kwargs.get("objective") or SequenceClassification()
        # the head drawn here is never used: each profile brings its own
        model = load_model(model_name, objective.head_size, key=jax.random.PRNGKey(0),
                           pooling=pooling)
        return cls(model, bank, **kwargs)

    @classmethod
    def from_random_pool(cls, model_name: str, profile_file: str, **kwargs) -> ProfileServer:
        """A server for `model_name` and the random pool that `profile_file` (any profile
        trained on it) records: a run with `pool="random"` writes no bank file, its seed
        draws the pool again; the pooling is the profile's."""
        _, meta = load_profile(profile_file)
        objective = kwargs.get("objective") or SequenceClassification()
        model = load_model(model_name, objective.head_size, key=jax.random.PRNGKey(0),
                           pooling=meta.get("pooling"))
        head_regex = kwargs.get("head_regex") or model.head_regex
        _, base = split_tree(model.params, head_regex)
        return cls(model, rebuild_random_bank(meta, base), **kwargs)

    @property
    def profiles(self) -> list[str]:
        return sorted(self._profiles)

    def add_profile(self, name: str, profile: Profile | str) -> None:
        """Adds (or replaces) a profile: a `Profile`, or a profile file checked against
        this server's bank and base."""
        if isinstance(profile, str):
            path = profile
            profile, meta = load_profile(path, self.bank.fingerprint, self.base_fingerprint)
            pooling = getattr(self.model.config, "pooling", "pooler")
            if meta.get("pooling", "pooler") != pooling:
                raise PeftError(f"profile {path!r} was trained with pooling "
                                f"{meta.get('pooling', 'pooler')!r}, this server's model "
                                f"reads {pooling!r}")
        n, slots = self.bank.size, len(self.bank.spec.targets)
        if profile.shape != (slots, 2, n):
            raise PeftError(f"profile {name!r} has shape {profile.shape}, this bank needs "
                            f"{(slots, 2, n)}")
        head = flatten_paths(profile.head)
        if sorted(head) != self._head_paths:
            raise PeftError(f"profile {name!r} has head leaves {sorted(head)}, the model's "
                            f"head is {self._head_paths}")
        self._profiles[name] = (np.asarray(profile.weights(), np.float32),
                                {p: np.asarray(x, np.float32) for p, x in head.items()})

    def outputs(self, batch: dict[str, np.ndarray], profiles: Sequence[str]) -> np.ndarray:
        """Model outputs (classification: [B, labels]) of a batch whose example i belongs
        to `profiles[i]`."""
        if len(profiles) != len(batch["input_ids"]):
            raise PeftError(f"{len(profiles)} profile names for a batch of "
                            f"{len(batch['input_ids'])} examples")
        unknown = sorted(set(profiles) - set(self._profiles))
        if unknown:
            raise PeftError(f"unknown profiles {unknown}; added: {self.profiles}")
        rows = [self._profiles[p] for p in profiles]
        shapes = {tuple((p, np.shape(head[p])) for p in sorted(head)) for _, head in rows}
        if len(shapes) > 1:
            raise PeftError("the batch mixes profiles with different heads (label counts): "
                            "serve them in separate batches")
        weights = np.stack([w for w, _ in rows])
        heads = unflatten_paths({p: np.stack([head[p] for _, head in rows])
                                 for p in self._head_paths})
        example = {k: np.asarray(v) for k, v in batch.items()
                   if k in self.objective.input_fields}
        return np.asarray(self._forward(self._base, self._adapters, weights, heads, example))

    def predict(self, texts: Sequence[str], profiles: Sequence[str],
                max_length: int = 128) -> np.ndarray:
        """Predictions (classification: label ids) of `texts`, text i under `profiles[i]`
        (one padded batch)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model.model_dir)
        ds: TokenizedSplit = tokenize_split(text_split(texts), self._tokenizer,
                                            max_length=max_length,
                                            buckets=(max_length,))
        batch = make_batch(ds, np.arange(len(texts)), max_length, len(texts))
        return np.asarray(self.objective.predictions(self.outputs(batch, profiles)))
