"""Every error fishjax raises on bad input, in one place so that any layer can raise them.

Each names what is wrong (the config field, file, leaf or option) in its message. All are
`ValueError`s, under one base `FishjaxError`, so a caller can catch fishjax's own errors
apart from bugs.
"""

from __future__ import annotations


class FishjaxError(ValueError):
    """Base of every fishjax error about bad input (config, files, shapes, masks)."""


class ConfigError(FishjaxError):
    """A config value (or workdir) that cannot be used."""


class DataError(FishjaxError):
    """Bad data or data configuration: the message names the task, file, row or column."""


class ModelError(FishjaxError):
    """A model, its files or its configuration cannot be used."""


class MaskError(FishjaxError):
    """A mask or mask file that does not fit the params, or bad selection arguments."""


class FisherError(FishjaxError):
    """Bad arguments to the Fisher computation."""


class SparseError(FishjaxError):
    """Indices or values that do not fit the params, or a malformed sparse increment."""


class DeltaError(FishjaxError):
    """A delta file that is malformed or does not fit the params it is applied to."""


class PeftError(FishjaxError):
    """A PEFT spec, tree or file that does not fit the params."""


class ShardingError(FishjaxError):
    """A mesh or sharding rule that cannot be realised on the available devices."""


class IRDError(FishjaxError):
    """Bad IRD options or arguments; `field` names the option at fault, if any."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field
