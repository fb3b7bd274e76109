"""`full`: dense fine-tuning of every parameter, the baseline every method is compared with.

Design note. Standard fine-tuning (BERT, Devlin et al., 2019): every parameter trains with
the trainer's AdamW, warmup and linear decay. No paper result to reproduce and no
deviation; it has no options block and ships the merged Hugging Face folder.
"""

from fishjax.methods.full import method  # noqa: F401  (registers the method)
