"""The deploy tests' fixtures (helpers in deploy_support.py)."""

from __future__ import annotations

import pytest
from tests.deploy.deploy_support import SYNTHETIC, exported_metric_names


@pytest.fixture(scope="session")
def exported() -> set[str]:
    """Every metric name the code exports, and the series Prometheus adds per target."""
    return exported_metric_names() | SYNTHETIC
