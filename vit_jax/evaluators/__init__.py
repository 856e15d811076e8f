"""Evaluators: what a run reports about a model on held-out data."""
