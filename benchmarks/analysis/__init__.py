"""Analyses behind the methods: gradient concentration, frozen-encoder probes, IRD vs FISH."""
