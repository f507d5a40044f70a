"""OpenAI-compatible HTTP app."""
