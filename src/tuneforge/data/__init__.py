"""Data stage: raw JSONL → validated chat rows → split → templated, masked tokens → dataset artifact."""
