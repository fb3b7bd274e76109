"""Fine-tuning methods. Importing this package registers every built-in method.

A method is one module here (its design note, `validate`, `setup`) built on the shared core
`fishjax.methods.common`; registering it is the import below.
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
    Method,
    MethodContext,
    MethodSetup,
    available_methods,
    get_method,
    inactive_blocks,
    method_options,
    register,
    register_method,
)

__all__ = [
    "Method",
    "MethodContext",
    "MethodSetup",
    "available_methods",
    "get_method",
    "inactive_blocks",
    "method_options",
    "register",
    "register_method",
]
