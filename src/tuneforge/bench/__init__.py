"""Benchmarks run by `tuneforge bench …`: baseline and tuneforge in one command, ratios printed."""
