"""Training stage: LoRA fine-tuning recipes."""
