"""Fine-tuning methods. Importing this package registers every built-in method."""

from fishjax.methods import (  # noqa: F401  (registers the methods)
    fish_tuning,
    full,
    ird,
    masked,
    sift,
)
from fishjax.methods.base import (
    Method,
    MethodContext,
    MethodSetup,
    available_methods,
    get_method,
    register_method,
)

__all__ = [
    "Method",
    "MethodContext",
    "MethodSetup",
    "available_methods",
    "get_method",
    "register_method",
]
