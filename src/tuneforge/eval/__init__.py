"""Evaluation stage: loss, answer accuracy, before/after comparison."""
