"""Benchmarks of fishjax, one sub-package per purpose; run each as a module from the
repository root, e.g. `python -m benchmarks.grid.glue --help`.

  common/      shared by the scripts: the machine record, the command-line and result-file
               helpers, README blocks, the tiny random test model
  grid/        the GLUE grid (methods x tasks x seeds), its cells, merges, plots and the
               validation-split protocol
  speed/       throughput and step cost: train step, Fisher pass, XLA CPU flags
  robustness/  fault injection (kill -9, corrupt files, divergence, config changes)
  multisource/ multi-source selection: its evaluation and its speed
  xpeft/       X-PEFT: trained adapter banks, bytes per profile and serving speed
  analysis/    what the methods rest on: gradient concentration, frozen probes, IRD vs FISH
  regression/  the refactor proof: the quickstart's artefacts and metrics against a record
Results are in benchmarks/results/.
"""
