"""Drift monitoring's configuration (`tuneforge monitor drift`, the traffic log). Defaults here and only here.

In `core` so that a pipeline file and the serving side (which writes the traffic log) can name it; the
detection itself lives in `tuneforge.monitor.drift`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DriftConfig(_Section):
    """How live traffic is compared with the training data."""

    alpha: float = Field(
        0.05, gt=0, lt=0.5, description="Family-wise false-alarm rate: the chance that a run on traffic from the "
        "training distribution reports drift on any signal (Holm's step-down correction over the signals tested)."
    )
    permutations: int = Field(
        500, ge=50, le=20000, description="Permutations of the embedding MMD and language-mix tests; the smallest "
        "p-value they can give is 1/(permutations+1)."
    )
    max_reference: int = Field(
        1000, ge=20, description="Training rows drawn (seeded, without replacement) as the reference sample."
    )
    max_traffic: int = Field(
        1000, ge=20, description="Logged requests drawn as the live sample (the newest window is what the file holds)."
    )
    min_samples: int = Field(
        20, ge=5, description="Fewer prompts than this on either side is an error: no test says much below it."
    )
    seed: int = Field(0, description="Seeds the sampling, the permutations and the reference split.")
    split: str = Field("train", description="Which split of a dataset artifact is the reference.")
    scrub_pii: bool = Field(
        True, description="Scrub personal data (core.pii) from every text read, before anything is embedded or "
        "shown in the report; the traffic log is scrubbed when written too."
    )
    batch_size: int = Field(32, ge=1, le=1024, description="Texts per encoder forward.")


class TrafficLogConfig(_Section):
    """The opt-in log of sampled, PII-scrubbed requests that drift monitoring reads."""

    path: str | None = Field(None, description="JSONL file appended to; None turns the log off.")
    sample_rate: float = Field(0.1, gt=0, le=1, description="Fraction of answered requests written.")
