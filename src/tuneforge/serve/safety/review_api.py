"""HTTP for the review queue: a router for reviewers and one for callers polling a held answer.

The gateway mounts them and puts its own authentication in front: `review_router(queue, reviewer=dep)`
takes a FastAPI dependency that returns the authenticated reviewer's name; without one, each decision
must name its reviewer in the body (`who`), for single-user or test setups.

Reviewers (`prefix` /review by default):
  GET  /review/items?status=pending&route=&limit=&offset=    the queue, oldest first
  GET  /review/items/{id}                                      one item and its audit rows
  POST /review/items/{id}/decision  {decision, reason, answer?, who?}   approve | edit | reject
  GET  /review/audit?item_id=                                  audit rows; /review/audit/verify checks the chain
  GET  /review/export?fmt=chat|instruction&route=              approved/edited answers as JSONL training rows
Callers:
  GET  /v1/reviews/{id}    202 {"status": "pending"} until decided; 200 with the answer, or 403 when rejected
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from tuneforge.serve.safety.review import ReviewError, ReviewQueue


class DecisionBody(BaseModel):
    """A reviewer's decision on one held answer."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "edit", "reject"]
    reason: str = Field("", max_length=10_000)
    answer: str | None = Field(None, max_length=1_000_000, description="The corrected answer (edit only).")
    who: str | None = Field(None, max_length=200, description="The reviewer, when the router has no auth "
                            "dependency that names them.")


def _not_found_or_conflict(exc: ReviewError) -> HTTPException:
    message = str(exc)
    status = 404 if message.startswith("no review item") else 409 if "already decided" in message else 400
    return HTTPException(status_code=status, detail=message)


def review_router(queue: ReviewQueue, reviewer: Callable[..., str] | None = None,
                  prefix: str = "/review") -> APIRouter:
    """The reviewers' API over `queue`; `reviewer` is a dependency returning the authenticated name."""
    router = APIRouter(prefix=prefix, tags=["review"])

    def no_reviewer() -> str | None:
        return None

    identity = reviewer or no_reviewer

    @router.get("/items")
    async def list_items(status: Literal["pending", "approved", "edited", "rejected", "all"] = "pending",
                         route: str | None = None, limit: int = Query(100, ge=1, le=1000),
                         offset: int = Query(0, ge=0), _who: str | None = Depends(identity)) -> dict[str, Any]:
        found = await run_in_threadpool(queue.list, None if status == "all" else status, limit, offset, route)
        return {"items": [i.to_dict() for i in found]}

    @router.get("/items/{item_id}")
    async def show_item(item_id: str, _who: str | None = Depends(identity)) -> dict[str, Any]:
        try:
            item = await run_in_threadpool(queue.get, item_id)
        except ReviewError as exc:
            raise _not_found_or_conflict(exc) from exc
        entries = await run_in_threadpool(queue.audit, item_id)
        return {**item.to_dict(), "audit": [e.to_dict() for e in entries]}

    @router.post("/items/{item_id}/decision")
    async def decide(item_id: str, body: DecisionBody, who: str | None = Depends(identity)) -> dict[str, Any]:
        name = who or body.who
        if not name:
            raise HTTPException(status_code=400, detail="who: name the reviewer (no authenticated reviewer)")
        try:
            item = await run_in_threadpool(queue.decide, item_id, body.decision, name, body.reason, body.answer)
        except ReviewError as exc:
            raise _not_found_or_conflict(exc) from exc
        return item.to_dict()

    @router.get("/audit")
    async def audit_rows(item_id: str | None = None, _who: str | None = Depends(identity)) -> dict[str, Any]:
        return {"audit": [e.to_dict() for e in await run_in_threadpool(queue.audit, item_id)]}

    @router.get("/audit/verify")
    async def verify(_who: str | None = Depends(identity)) -> dict[str, Any]:
        problems = await run_in_threadpool(queue.verify_audit)
        return {"intact": not problems, "problems": problems}

    @router.get("/export", response_class=PlainTextResponse)
    async def export(fmt: Literal["chat", "instruction"] = "chat", route: str | None = None,
                     _who: str | None = Depends(identity)) -> PlainTextResponse:
        rows = await run_in_threadpool(queue.export, None, fmt, route)
        return PlainTextResponse("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                 media_type="application/x-ndjson")

    return router


def result_router(queue: ReviewQueue, prefix: str = "/v1/reviews", tenant: Callable[..., Any] | None = None
                  ) -> APIRouter:
    """Callers poll a held answer by its review id. With `tenant` (a dependency returning the caller's
    tenant), an item held for another tenant is answered 404, as if it did not exist."""
    router = APIRouter(prefix=prefix, tags=["review"])

    async def anyone() -> None:
        return None

    @router.get("/{item_id}")
    async def result(item_id: str, caller: Any = Depends(tenant or anyone)) -> JSONResponse:
        try:
            item = await run_in_threadpool(queue.get, item_id)
            if tenant is not None and item.meta.get("tenant") != caller:
                raise ReviewError(f"no review item {item_id!r}")
            answer = await run_in_threadpool(queue.release, item_id)
        except ReviewError as exc:
            raise _not_found_or_conflict(exc) from exc
        if item.status == "pending":
            return JSONResponse({"id": item_id, "status": "pending"}, status_code=202)
        if item.status == "rejected":
            return JSONResponse({"id": item_id, "status": "rejected",
                                 "error": {"message": "the answer was rejected by a reviewer"}}, status_code=403)
        return JSONResponse({"id": item_id, "status": item.status, "answer": answer})

    return router
