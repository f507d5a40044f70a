"""Refusals in OpenAI's error shape, with the headers OpenAI sends alongside (Retry-After, x-ratelimit-*)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from tuneforge.serve.api.wire import error_body


class GatewayError(Exception):
    def __init__(self, status: int, message: str, code: str, type_: str = "invalid_request_error",
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.type, self.param = status, message, code, type_, param
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.message, self.type, self.param, self.code), status_code=self.status,
                            headers=self.headers)
