"""`python -m tuneforge.ui.worker JOB_DIR`: run one UI job (see `ui.jobs`) by calling the stage's function.

The worker owns the job's `status.json` while it runs and appends one line per training step to
`events.jsonl`. SIGTERM (the Stop button) ends it as `stopped`; the checkpoints the loop has written stay.
"""

from __future__ import annotations

import json
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from tuneforge.core.artifacts import load_artifact
from tuneforge.core.config import PipelineConfig
from tuneforge.core.errors import TuneforgeError
from tuneforge.ui.jobs import now, read_json, write_json


class Stopped(BaseException):
    """Raised in the worker by SIGTERM: unwinds through the stage (BaseException: never caught as an error)."""


def _stop(signum: int, frame: Any) -> None:
    raise Stopped()


def _config(spec: dict[str, Any]) -> PipelineConfig:
    return PipelineConfig.model_validate(spec["config"])


def _prepare(spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    from tuneforge.data.prepare import prepare

    cfg = _config(spec)
    artifact = prepare(cfg.data, cfg.model, spec["output"])
    m = artifact.metrics
    return {"artifact": str(artifact.path), "rows_train": m["rows_train"], "rows_validation": m["rows_validation"]}


def _plan(spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    import torch

    from tuneforge.train.loop import memory_plan
    from tuneforge.train.memory import available_bytes

    cfg = _config(spec)
    dataset = load_artifact(spec["inputs"]["dataset"], kind="dataset")
    plan = memory_plan(dataset, cfg.model, cfg.train)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    budget = available_bytes(device, cfg.train.memory_limit_gb)
    return {"plan": plan.describe(), "batch_size": plan.batch_size, "total_gib": round(plan.total / 2**30, 3),
            "budget_gib": round(budget / 2**30, 2), "device": device, "fits": plan.total <= budget}


def _train(spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    from tuneforge.train.loop import train

    cfg = _config(spec)
    dataset = load_artifact(spec["inputs"]["dataset"], kind="dataset")
    events = open(folder / "events.jsonl", "a", buffering=1)  # one line per step, flushed as written

    def on_step(record: dict[str, Any]) -> None:
        events.write(json.dumps(record) + "\n")

    with events:
        artifact = train(dataset, cfg.model, cfg.train, spec["output"], resume=spec.get("resume", False),
                         on_step=on_step)
    assert artifact is not None  # one process: always the main one
    m = artifact.metrics
    return {"artifact": str(artifact.path), "kind": artifact.kind, "steps": m.get("steps"),
            "train_loss_last": m.get("train_loss_last"), "val_loss": m.get("val_loss")}


def _eval(spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    from tuneforge.eval.evaluate import run_eval

    cfg = _config(spec)
    dataset_path = spec["inputs"].get("dataset")
    dataset = load_artifact(dataset_path, kind="dataset") if dataset_path else None
    report = run_eval(spec["inputs"]["model"], cfg.eval, spec["output"], dataset, cfg.model.dtype)
    return {"artifact": str(report.path), "gates": report.metrics.get("gates", [])}


RUNNERS = {"prepare": _prepare, "plan": _plan, "train": _train, "eval": _eval}


def run(folder: Path) -> int:
    """Run the job in `folder`; 0 when it finished, 1 when it failed or was stopped."""
    spec = read_json(folder / "spec.json")
    status = read_json(folder / "status.json")
    signal.signal(signal.SIGTERM, _stop)
    final: dict[str, Any]
    write_json(folder / "status.json", {**status, "state": "running", "started_at": now(), "error": None})
    try:
        result = RUNNERS[spec["kind"]](spec, folder)
    except Stopped:
        write_json(folder / "status.json", {**read_json(folder / "status.json"), "state": "stopped",
                                            "finished_at": now()})
        return 1
    except TuneforgeError as exc:  # bad input or a refused operation: the message names the field or file
        final = {"state": "failed", "error": str(exc), "finished_at": now()}
    except Exception as exc:  # a bug or a library failure: the page shows its one line, the log the traceback
        traceback.print_exc()
        final = {"state": "failed", "error": f"{type(exc).__name__}: {exc}", "finished_at": now()}
    else:
        final = {"state": "done", "result": result, "finished_at": now()}
    write_json(folder / "status.json", {**read_json(folder / "status.json"), **final})
    return 0 if final["state"] == "done" else 1


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
