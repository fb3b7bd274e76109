"""Robustness: fault injection into training runs."""
