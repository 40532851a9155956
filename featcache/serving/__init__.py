"""Serving a trained head: predict, export one model, verify a cache against the live model."""
