"""Serving: engine (generation) and api (OpenAI-compatible HTTP)."""
