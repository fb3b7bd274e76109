"""Config fields whose default is "what the model family says" (None in configs/default.py).

`resolve_model_defaults` fills them from the family's registry entry
(`fishjax.models.registry`) before a run compares or writes its config, so a workdir's
`config.json` records the values the run really used, and the head regex and the sharding
rules are defined once, by the family, not in every config:
- `method.head_regex`: the family's `head_regex`;
- `method.sift.head_regex`: its `dense_head_regex` (the head and the pooler feeding it);
- `mesh.param_rules`: its `param_rules` when `mesh.model > 1`, else `()` (a 1-device model
  axis splits nothing, and `()` is what a workdir written before this default recorded);
- `method.peft.lora_targets`, `method.sift.eligible_regex`, `method.bitfit_regex`: the
  family's layer names for them (the encoders' values are what these fields held before
  they became family defaults, so an older workdir's config compares equal).
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections

from fishjax.models.hub import resolve_model_dir
from fishjax.models.registry import ModelFamily, family_of_folder

# (field path in the config, its value from (family, config) when None)
FAMILY_DEFAULTS: tuple[tuple[tuple[str, ...], Callable[[ModelFamily, ml_collections.ConfigDict],
                                                         object]], ...] = (
    (("method", "head_regex"), lambda family, config: family.head_regex),
    (("method", "sift", "head_regex"), lambda family, config: family.dense_head_regex),
    (("method", "peft", "lora_targets"), lambda family, config: family.lora_targets),
    (("method", "sift", "eligible_regex"), lambda family, config: family.sift_regex),
    (("method", "bitfit_regex"), lambda family, config: family.bitfit_regex),
    (("mesh", "param_rules"),
     lambda family, config: family.param_rules if config.mesh.model > 1 else ()),
)


def _node(config: ml_collections.ConfigDict, path: tuple[str, ...]):
    node = config
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, ml_collections.ConfigDict) else None
    return node if isinstance(node, ml_collections.ConfigDict) and path[-1] in node else None


def _unset(config: ml_collections.ConfigDict) -> list:
    return [(path, value) for path, value in FAMILY_DEFAULTS
            if (node := _node(config, path)) is not None and node[path[-1]] is None]


def resolve_model_defaults(config: ml_collections.ConfigDict,
                           family: ModelFamily | None = None) -> None:
    """Fills every unset family default of `config` in place (reads only the model's
    `config.json`; `family` skips even that). Idempotent."""
    unset = _unset(config)
    if not unset:
        return
    if family is None:
        family = family_of_folder(resolve_model_dir(config.model.name))
    for path, value in unset:
        _node(config, path)[path[-1]] = value(family, config)
