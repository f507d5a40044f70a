"""The request log and feedback: one row per answered request, written in batches off the event loop.

Rows carry route, variant, replica, status, tokens and latencies, so that two variants of a canary can
be compared (`tuneforge gateway compare`) together with the thumbs up/down of `POST /v1/feedback`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import sqlalchemy as sa

from tuneforge.gateway.store import feedback, request_log

log = logging.getLogger("tuneforge.gateway")
FLUSH_S = 1.0


class RequestLog:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._rows: list[dict[str, Any]] = []
        self._task: asyncio.Task | None = None

    def add(self, **row: Any) -> None:
        self._rows.append(row)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as db:
            db.execute(request_log.insert(), rows)

    async def flush(self) -> None:
        rows, self._rows = self._rows, []
        if rows:
            try:
                await asyncio.to_thread(self._write, rows)
            except Exception as exc:  # the log is for analysis: a failed write must not fail requests
                log.warning("request log: %d rows not written: %s", len(rows), exc)

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(FLUSH_S)
                await self.flush()

        self._task = asyncio.create_task(loop(), name="tuneforge-gateway-log")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()

    def known(self, response_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as db:
            row = db.execute(sa.select(request_log).where(request_log.c.response_id == response_id)).mappings().first()
        return dict(row) if row else None

    def record_feedback(self, response_id: str, key_id: str, score: int, comment: str) -> None:
        with self.engine.begin() as db:
            db.execute(feedback.insert().values(response_id=response_id, key_id=key_id, score=score,
                                                comment=comment, ts=time.time()))
