"""Monitoring: metric definitions (Prometheus, vLLM-style names under `tuneforge:`)."""
