"""Artifacts, config, errors, paths: the layer every stage builds on. Imports nothing in-package."""
