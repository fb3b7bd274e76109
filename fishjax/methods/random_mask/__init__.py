"""`random_mask`: k entries chosen uniformly at random (seeded), FISH's budget and code path.

Design note. The baseline that says whether FISH's ranking matters (FISH Mask, Sung et al.,
2021, compare against it too): the same eligible entries, budget
(`keep_ratio`, head policy), head and training as `fish`, only the entries are drawn at
random with the method's own PRNG key (same seed, same mask).
"""

from fishjax.methods.random_mask import method  # noqa: F401  (registers the method)
