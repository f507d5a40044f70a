"""Compression and export: offline transforms of a tuned model, each checked against its parent."""
