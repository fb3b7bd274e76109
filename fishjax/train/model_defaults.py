"""Config fields whose default is "what the model family says" (None in configs/default.py).

`resolve_model_defaults` fills them from the family's registry entry
(`fishjax.models.registry`) before a run compares or writes its config, so a workdir's
`config.json` records the regexes the run really used, and the head regex is defined once,
by the family, not in every config.
"""

from __future__ import annotations

import ml_collections

from fishjax.models.hub import resolve_model_dir
from fishjax.models.registry import ModelFamily, family_of_folder

# (field path in config.method, the family attribute that fills it when None)
FAMILY_DEFAULTS = (
    (("head_regex",), "head_regex"),
    (("sift", "head_regex"), "dense_head_regex"),
)


def _unset(method: ml_collections.ConfigDict) -> list[tuple[tuple[str, ...], str]]:
    out = []
    for path, attr in FAMILY_DEFAULTS:
        node = method
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, ml_collections.ConfigDict) else None
        if isinstance(node, ml_collections.ConfigDict) and path[-1] in node \
                and node[path[-1]] is None:
            out.append((path, attr))
    return out


def resolve_model_defaults(config: ml_collections.ConfigDict,
                           family: ModelFamily | None = None) -> None:
    """Fills every unset family default of `config.method` in place (reads only the model's
    `config.json`; `family` skips even that). Idempotent."""
    unset = _unset(config.method)
    if not unset:
        return
    if family is None:
        family = family_of_folder(resolve_model_dir(config.model.name))
    for path, attr in unset:
        node = config.method
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = getattr(family, attr)
