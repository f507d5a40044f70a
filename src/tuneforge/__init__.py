"""tuneforge: from raw domain data to a fine-tuned LLM behind an OpenAI-compatible endpoint."""

__version__ = "0.1.0"
