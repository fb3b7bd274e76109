"""The files several methods share: mask and sparse-delta files bound to their base model
by a fingerprint. A method's own formats (PEFT files, X-PEFT banks and profiles) live in its
folder under `fishjax/methods/`. Every write is atomic."""
