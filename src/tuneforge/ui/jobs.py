"""Background jobs of the UI: each prepare / plan / train / eval runs in its own worker process.

A job is a folder, `WORKSPACE/jobs/<id>/`: `spec.json` (what to run: the kind, the config sections, the
inputs and the output artifact folder), `status.json` (state, pid, result or error; written atomically by the
worker), `events.jsonl` (one line per training step, appended by the worker) and `log.txt` (its output).
Everything a page shows comes from these files, so a reloaded page — or a restarted UI — finds the same run.
The request thread only starts, stops and reads jobs; the work happens in `python -m tuneforge.ui.worker`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tuneforge.core.errors import TuneforgeError

KINDS = ("prepare", "plan", "train", "eval")
ACTIVE = ("starting", "running")


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write through a temporary file and rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process with that pid: not our worker
        return False
    return True


class Jobs:
    """Start, stop, resume and read the workspace's jobs."""

    def __init__(self, workspace: Path) -> None:
        self.root = workspace / "jobs"
        self.artifacts = workspace / "artifacts"
        self.root.mkdir(parents=True, exist_ok=True)
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self._processes: dict[str, subprocess.Popen] = {}

    def folder(self, job_id: str) -> Path:
        path = self.root / job_id
        if not job_id or "/" in job_id or job_id.startswith(".") or not (path / "spec.json").is_file():
            raise TuneforgeError(f"no job {job_id!r}")
        return path

    def start(self, kind: str, config: dict[str, Any], inputs: dict[str, Any]) -> str:
        """Write the job's spec and start its worker; returns the job id."""
        if kind not in KINDS:
            raise TuneforgeError(f"job kind {kind!r}: expected one of {', '.join(KINDS)}")
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
        job_id = f"{kind}-{stamp}-{secrets.token_hex(2)}"
        folder = self.root / job_id
        folder.mkdir()
        output = self.artifacts / job_id if kind != "plan" else None
        write_json(folder / "spec.json", {"kind": kind, "config": config, "inputs": inputs,
                                          "output": str(output) if output else None, "resume": False})
        self._launch(job_id, folder, {"kind": kind, "created_at": now()})
        return job_id

    def _launch(self, job_id: str, folder: Path, status: dict[str, Any]) -> None:
        write_json(folder / "status.json", {**status, "state": "starting", "error": None})
        with open(folder / "log.txt", "ab") as log:
            # its own session: stop() signals the worker's whole process group, never the UI
            process = subprocess.Popen([sys.executable, "-m", "tuneforge.ui.worker", str(folder)], stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"})
        self._processes[job_id] = process
        write_json(folder / "status.json", {**read_json(folder / "status.json"), "pid": process.pid})

    def status(self, job_id: str) -> dict[str, Any]:
        """The job's status; a worker that died without saying so is reported as failed."""
        folder = self.folder(job_id)
        status = read_json(folder / "status.json")
        process = self._processes.get(job_id)
        exited = process.poll() is not None if process is not None else not _alive(status.get("pid"))
        if status.get("state") in ACTIVE and exited:
            status = read_json(folder / "status.json")  # it may have finished between the two reads
            if status.get("state") in ACTIVE:
                status.update(state="failed", error="the worker process exited without a result (see its log)")
        spec = read_json(folder / "spec.json")
        return {"id": job_id, **status, "inputs": spec.get("inputs", {}), "output": spec.get("output")}

    def events(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        """Events past the first `after` lines."""
        path = self.folder(job_id) / "events.jsonl"
        if not path.is_file():
            return []
        lines = path.read_text().splitlines()[after:]
        return [json.loads(line) for line in lines if line.strip()]

    def log_tail(self, job_id: str, chars: int = 4000) -> str:
        path = self.folder(job_id) / "log.txt"
        return path.read_text(errors="replace")[-chars:] if path.is_file() else ""

    def list(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Jobs newest first."""
        ids = sorted((p.name for p in self.root.iterdir() if (p / "spec.json").is_file()),
                     key=lambda name: name.split("-", 1)[1], reverse=True)
        return [self.status(i) for i in ids if kind is None or i.startswith(f"{kind}-")]

    def stop(self, job_id: str) -> dict[str, Any]:
        """SIGTERM the worker's process group; the worker records `stopped` (checkpoints already written stay)."""
        status = self.status(job_id)
        if status.get("state") not in ACTIVE:
            raise TuneforgeError(f"job {job_id} is {status.get('state')}, not running")
        try:
            os.killpg(int(status["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
        process = self._processes.get(job_id)
        if process is not None:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        path = self.folder(job_id) / "status.json"
        recorded = read_json(path)
        if recorded.get("state") in ACTIVE and not _alive(status.get("pid")):
            # the signal came before the worker could record its end (still importing, or SIGKILLed): the stop
            # is what ended it, so the job reads as stopped, not as a worker that died on its own
            write_json(path, {**recorded, "state": "stopped", "finished_at": now()})
        return self.status(job_id)

    def resume(self, job_id: str) -> dict[str, Any]:
        """Start a stopped or failed training job again from its newest checkpoint."""
        from tuneforge.train.checkpoint import checkpoint_dir, latest_step

        status = self.status(job_id)
        folder = self.folder(job_id)
        spec = read_json(folder / "spec.json")
        if spec["kind"] != "train":
            raise TuneforgeError(f"job {job_id} is a {spec['kind']} job; only training resumes from a checkpoint")
        if status.get("state") not in ("stopped", "failed"):
            raise TuneforgeError(f"job {job_id} is {status.get('state')}; only a stopped or failed run resumes")
        step = latest_step(checkpoint_dir(spec["output"]))
        if step is None:
            raise TuneforgeError("no checkpoint to resume from: set checkpoint_every in the form before starting")
        write_json(folder / "spec.json", {**spec, "resume": True})
        self._launch(job_id, folder, {"kind": "train", "created_at": status.get("created_at"),
                                      "resumed_from_step": step})
        return self.status(job_id)

    def close(self) -> None:
        """Stop every worker this UI started that is still running."""
        for job_id, process in list(self._processes.items()):
            if process.poll() is None:
                self.stop(job_id)
