"""What a run leaves on disk besides checkpoints: mask, delta and PEFT files bound to their
base model by a fingerprint, and Hugging Face / PEFT folders. Every write is atomic."""
