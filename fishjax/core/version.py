"""The package version, recorded in every file fishjax writes."""

__version__ = "0.1.0"
