"""Experiment tracking: MLflow (local store by default) and TensorBoard, both optional and lazy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.core.config import TrackingConfig, flatten
from tuneforge.core.errors import ConfigError


class Tracker:
    """Fans params, per-step metrics and the final artifact out to the configured backends."""

    def __init__(self, cfg: TrackingConfig, output: Path, run_name: str, params: dict[str, Any]) -> None:
        self.mlflow: Any = None
        self.tensorboard: Any = None
        if cfg.mlflow:
            try:
                import mlflow
            except ImportError as exc:
                raise ConfigError("train.tracking.mlflow needs MLflow: pip install mlflow-skinny") from exc
            uri = cfg.mlflow_uri or f"sqlite:///{(Path.cwd() / 'mlflow.db').as_posix()}"
            mlflow.set_tracking_uri(uri)
            mlflow.set_experiment(cfg.experiment)
            self.mlflow = mlflow
            self.run = mlflow.start_run(run_name=run_name)
            mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ConfigError("train.tracking.tensorboard needs TensorBoard: pip install tensorboard") from exc
            self.tensorboard = SummaryWriter(log_dir=str(output.parent / f"{output.name}.tensorboard"))

    def log(self, metrics: dict[str, float | None], step: int) -> None:
        values = {k: float(v) for k, v in metrics.items() if v is not None}
        if self.mlflow is not None:
            self.mlflow.log_metrics(values, step=step)
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)

    def finish(self, artifact_path: Path | None, summary: dict[str, Any], status: str = "FINISHED") -> None:
        if self.mlflow is not None:
            numbers = {k: float(v) for k, v in summary.items() if isinstance(v, int | float) and v is not None}
            self.mlflow.log_metrics(numbers)
            if artifact_path is not None:
                self.mlflow.set_tag("tuneforge.artifact", str(artifact_path))
                for name in ("manifest.json", "history.jsonl", "loss_curve.png"):
                    if (artifact_path / name).is_file():
                        self.mlflow.log_artifact(str(artifact_path / name))
            self.mlflow.end_run(status=status)
        if self.tensorboard is not None:
            self.tensorboard.close()
