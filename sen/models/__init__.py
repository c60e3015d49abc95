"""Shipped models: one folder per model, with its weights (model.pt), model card (README.md) and metrics.json."""
