"""`head_only`: trains only the task head (`method.head_regex`), the rest frozen.

Design note. The floor every sparse method must beat (a linear probe when the head is the
classifier; no paper of its own, so no deviation).
The trainable tree is the head alone, so gradients and optimizer state exist for it only;
the encoder's backward pass is not computed.
"""

from fishjax.methods.head_only import method  # noqa: F401  (registers the method)
