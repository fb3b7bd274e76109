"""What the benchmark scripts share: `machine` (what a figure ran on), `cli` (their common
flags, result files and child processes), `readme_blocks` (generated README tables) and
`tiny_model` (the random tiny encoder of the unit tests and the fault injection)."""
