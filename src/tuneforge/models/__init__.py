"""Model loading: built-in names, artifacts, Hugging Face folders, hub ids."""

from tuneforge.models.chat_template import DEFAULT_CHAT_TEMPLATE, ensure_chat_template
from tuneforge.models.loader import BUILTIN, LoadedModel, load, load_tokenizer

__all__ = ["BUILTIN", "DEFAULT_CHAT_TEMPLATE", "LoadedModel", "ensure_chat_template", "load", "load_tokenizer"]
