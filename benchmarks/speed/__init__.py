"""Speed: the train step against PyTorch, per-method step cost, the Fisher pass and its
engines, XLA's CPU flags."""
