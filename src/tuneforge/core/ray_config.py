"""`tuneforge serve --ray`: engine replicas as Ray Serve deployments. Defaults here and only here.

`serve.ray` in a pipeline file. Ray Serve's own defaults (target_ongoing_requests 2, max_ongoing_requests 5)
are made for requests a replica handles one or two at a time. An LLM replica batches: it generates
`serve.max_num_seqs` sequences together, and its time per token grows with the batch (ray-llm #133: a count
of ongoing requests is a poor signal unless it is set against the batch). So the unset values here are
derived from the engine's batch (`resolved`): a replica is handed at most `max_num_seqs` requests (the rest
wait in Ray's router, where a replica that comes up can take them, instead of in one replica's queue), and
autoscaling aims at half the batch per replica: a replica is added while the busy ones still have free
slots for the requests that arrive during the minute a new replica needs to load its model.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RayServeConfig(BaseModel):
    """Replicas, autoscaling and placement of the Ray Serve deployment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    address: str | None = Field(
        None, description="Ray cluster to join: `auto` (the one `ray start --head` runs on this machine), "
        "`ray://host:10001` or `host:6379`; None starts a local one-machine cluster for this process."
    )
    min_replicas: int = Field(1, ge=0, description="Fewest engine replicas (0 lets an idle model scale to zero).")
    max_replicas: int = Field(4, ge=1, description="Most engine replicas.")
    initial_replicas: int | None = Field(None, ge=0, description="Replicas at start; default min_replicas.")
    target_ongoing_requests: float | None = Field(
        None, gt=0, description="Autoscaling target per replica (running + queued at the replica); default half "
        "of serve.max_num_seqs."
    )
    max_ongoing_requests: int | None = Field(
        None, ge=1, description="Requests Ray hands one replica at a time; default serve.max_num_seqs (more wait "
        "in Ray's router for a free replica)."
    )
    upscale_delay_s: float = Field(
        30.0, ge=0, description="Load must stay above the target this long before a replica is added."
    )
    downscale_delay_s: float = Field(
        600.0, ge=0, description="Load must stay below the target this long before a replica is removed (a new "
        "replica loads a model: minutes on a large one)."
    )
    metrics_interval_s: float = Field(
        10.0, gt=0, description="How often replicas report their ongoing requests to the autoscaler (Ray's default)."
    )
    look_back_period_s: float = Field(
        30.0, gt=0, description="Window the autoscaler averages ongoing requests over (Ray's default)."
    )
    num_cpus: float = Field(1.0, ge=0, description="CPUs Ray reserves per replica.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs Ray reserves per replica (1 per engine on GPU hosts).")
    app_name: str = Field("tuneforge", description="Ray Serve application name.")

    @model_validator(mode="after")
    def _bounds(self) -> RayServeConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"serve.ray.min_replicas={self.min_replicas} is above max_replicas={self.max_replicas}")
        initial = self.initial_replicas
        if initial is not None and not self.min_replicas <= initial <= self.max_replicas:
            raise ValueError(f"serve.ray.initial_replicas={initial} is outside [min_replicas, max_replicas]")
        return self

    def resolved(self, max_num_seqs: int) -> tuple[float, int]:
        """(target_ongoing_requests, max_ongoing_requests) for an engine with `max_num_seqs` slots."""
        target = self.target_ongoing_requests or max(1.0, max_num_seqs / 2)
        return target, self.max_ongoing_requests or max_num_seqs
