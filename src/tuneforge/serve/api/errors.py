"""Errors in OpenAI's shape: `APIError` raised by handlers, and the app's exception handlers."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge.serve.api.wire import error_body
from tuneforge.serve.engine.engine import StreamDelta


class APIError(Exception):
    """An error answered with OpenAI's error object."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def engine_error(final: StreamDelta, request_timeout: float) -> APIError | None:
    """The error a finished request answers with, if it failed: 400 when the engine found fault with the
    request itself (its parameters or prompt), 500 for a fault of the engine or the model, 504 past its
    deadline; None when it finished normally."""
    if final.finish_reason == "error":
        if final.status == 400:
            return APIError(400, final.error or "invalid request", code="invalid_request")
        return APIError(500, final.error or "engine error", code="engine_error", type_="server_error")
    if final.finish_reason == "timeout":
        return APIError(504, f"the request ran past serve.request_timeout ({request_timeout:g} s)",
                        code="deadline_exceeded", type_="timeout_error")
    return None


def install_handlers(app: FastAPI) -> None:
    """Every error the app answers is OpenAI's error object: ours, validation (400 naming the field),
    routing (404/405 with its `Allow` header), and anything unexpected (500, named)."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"] if p != "body"]
        param = ".".join(loc) or None
        why = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":  # issue 21: no parameter is ever silently ignored
            why = "unrecognized parameter: this server does not implement it"
        message = f"{param}: {why}" if param else why
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}: {exc}", "server_error",
                                       code="internal_error"), status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code, headers=exc.headers)
