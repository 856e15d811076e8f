"""Inference: a finished run as a classifier (predict, export, serving)."""
