"""Fine-tuning methods. Importing this package registers every built-in method.

A method is one folder here, `fishjax/methods/<name>/`: its `__init__.py` opens with the
design note (paper, what it computes, deliberate deviations), `method.py` holds `validate`
and `setup`, `options.py` the defaults of its `config.method.<name>` block (where it has
one), and its own file formats and serving code sit beside them. All build on the shared
core (`fishjax.methods.base`, `fishjax.methods.common`); registering a method is its import
below.
"""

from fishjax.methods import (  # noqa: F401  (registers the methods)
    bitfit,
    fish,
    full,
    head_only,
    ird,
    peft,
    random_mask,
    sift,
    xpeft,
)
from fishjax.methods.base import (
    ArtifactReader,
    Method,
    MethodContext,
    MethodSetup,
    artifact_reader,
    available_methods,
    get_method,
    inactive_blocks,
    method_options,
    register,
    register_method,
)

__all__ = [
    "ArtifactReader",
    "Method",
    "MethodContext",
    "MethodSetup",
    "artifact_reader",
    "available_methods",
    "get_method",
    "inactive_blocks",
    "method_options",
    "register",
    "register_method",
]
