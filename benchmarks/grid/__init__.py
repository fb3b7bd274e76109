"""The GLUE grid: methods x tasks x seeds (`glue`), its cells, merges of parallel runs,
plots and the validation-split protocol."""
