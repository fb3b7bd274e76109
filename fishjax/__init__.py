"""fishjax: data-aware sparse fine-tuning of pretrained transformers in JAX/Flax."""

from fishjax.core.version import __version__

__all__ = ["__version__"]
