"""serve.ray: defaults sized from the engine's batch, bounds checked where they are declared."""

import pytest

from tuneforge.core.config import load_pipeline
from tuneforge.core.errors import ConfigError


def test_unset_targets_follow_the_engine_batch():
    cfg = load_pipeline(None, ["serve.max_num_seqs=16"], {}).serve
    assert cfg.ray.resolved(cfg.max_num_seqs) == (8.0, 16)
    cfg = load_pipeline(None, ["serve.ray.target_ongoing_requests=3", "serve.ray.max_ongoing_requests=5"], {}).serve
    assert cfg.ray.resolved(cfg.max_num_seqs) == (3.0, 5)


def test_replica_bounds_are_checked():
    with pytest.raises(ConfigError, match="min_replicas=5 is above max_replicas=2"):
        load_pipeline(None, ["serve.ray.min_replicas=5", "serve.ray.max_replicas=2"], {})
    with pytest.raises(ConfigError, match="initial_replicas=9 is outside"):
        load_pipeline(None, ["serve.ray.initial_replicas=9"], {})
