"""The bottom layer: parameter-tree paths, atomic file writes, the safetensors reader and
the error types. Imports nothing else of fishjax."""
