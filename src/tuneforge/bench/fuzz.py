"""`tuneforge bench fuzz`: schemathesis over a live server's `/openapi.json`.

Every operation of the schema gets generated requests, valid ones (positive mode: they must not be
refused for being invalid) and invalid ones (negative mode: they must get a 4xx). A hook keeps the
fuzzer on the paths that reach the engine: a string `model` is pinned to the served model and a
positive `max_tokens` / `max_completion_tokens` / `n` is capped, so generated cases run real
generations instead of stopping at the 404 or the length check. Each response is checked with
schemathesis' checks: no 5xx, the status code and the body match what the schema declares, a 405
names the allowed methods, and (negative cases) invalid data is refused. Every 4xx must name its
parameter or its limit in OpenAI's error object.

The run is reproducible: Hypothesis draws from `seed`, no example database is kept.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

CAPPED = {"max_tokens": 4, "max_completion_tokens": 4, "n": 2, "top_logprobs": 3, "logprobs": 3}


@dataclass
class FuzzReport:
    cases: int = 0
    statuses: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # one line per failed check, with the case's curl
    refusals: Counter = field(default_factory=Counter)  # schema-valid cases refused: (status, param) → count
    examples: dict[str, str] = field(default_factory=dict)  # one response body per refusal reason

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)

    def render(self) -> str:
        codes = ", ".join(f"{code}×{count}" for code, count in sorted(self.statuses.items()))
        lines = [f"{self.cases} cases; status codes: {codes}; 5xx: {self.server_errors}; "
                 f"failed checks: {len(self.failures)}"]
        if self.refusals:
            top = ", ".join(f"{why} ×{count}" for why, count in self.refusals.most_common(8))
            lines.append(f"schema-valid cases refused, by reason: {top}")
        return "\n".join(lines + [f"  - {line}" for line in self.failures[:20]])


def pin(body: Any, model: str) -> Any:
    """Keep a generated body on the engine's paths: the served `model`, small generations."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    if isinstance(body.get("model"), str):
        body["model"] = model
    for key, cap in CAPPED.items():
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > cap:
            body[key] = cap
    return body


def _error_of(response) -> dict | None:
    """The OpenAI error object of a response, {} when the body has none, None when it is not JSON."""
    try:
        body = response.json()
    except ValueError:
        return None
    return (body.get("error") or {}) if isinstance(body, dict) else {}


def _refusal(status: int, error: dict | None) -> str:
    if error is None:
        return f"{status}"
    return f"{status} {error.get('param') or error.get('code') or error.get('message', '')[:40]}"


def _unnamed_4xx(status: int, error: dict | None) -> str | None:
    """A 4xx must name the parameter or the limit: OpenAI's error object with a message."""
    if error is None:
        return f"{status} without a JSON error body"
    if not error.get("message"):
        return f"{status} without an error message"
    return None


def run_fuzz(base_url: str, model: str, cases: int, seed: int = 0, negative_share: float = 0.3) -> FuzzReport:
    """`cases` generated requests spread over the schema's operations (negative mode for `negative_share`)."""
    import hypothesis
    import requests
    import schemathesis
    from hypothesis import HealthCheck, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        allow_header_conformance,
        content_type_conformance,
        negative_data_rejection,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    root = base_url.rstrip("/").removesuffix("/v1")
    schema = schemathesis.openapi.from_url(f"{root}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    report = FuzzReport()
    session = requests.Session()
    common = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
              allow_header_conformance]
    # operations without input (health, models, metrics) have one case to give; the rest share the budget
    with_input = [op for op in operations if op.body or op.query]
    for operation in operations:
        if operation in with_input:
            spare = cases - (len(operations) - len(with_input))
            position = with_input.index(operation)
            share = spare // len(with_input) + (1 if position < spare % len(with_input) else 0)
        else:
            share = 1
        for mode, count in ((GenerationMode.NEGATIVE, round(share * negative_share)),
                            (GenerationMode.POSITIVE, share - round(share * negative_share))):
            if count < 1:
                continue
            checks = [*common, negative_data_rejection] if mode is GenerationMode.NEGATIVE else common
            test = hypothesis.given(operation.as_strategy(generation_mode=mode))(_one_case(
                operation, mode, checks, model, root, session, report))
            op_seed = int(hashlib.sha256(f"{seed}:{operation.label}:{mode.value}".encode()).hexdigest()[:8], 16)
            test = settings(max_examples=count, database=None, deadline=None, phases=[hypothesis.Phase.generate],
                            suppress_health_check=list(HealthCheck))(test)
            try:
                hypothesis.seed(op_seed)(test)()
            except hypothesis.errors.Unsatisfiable:  # nothing to make invalid (an operation without input)
                continue
    return report


def _one_case(operation, mode, checks, model: str, root: str, session, report: FuzzReport):
    """The Hypothesis test body for one operation and mode: call, count, check; failures are recorded."""

    from schemathesis.core.failures import Failure, FailureGroup

    def one(case) -> None:
        case.body = pin(case.body, model)
        response = case.call(base_url=root, session=session, timeout=120)
        status = response.status_code
        report.cases += 1
        report.statuses[status] += 1
        if 400 <= status < 500:
            error = _error_of(response)
            if mode.value == "positive":
                why = _refusal(status, error)
                report.refusals[why] += 1
                report.examples.setdefault(why, response.text[:300])
            unnamed = _unnamed_4xx(status, error)
            if unnamed:
                report.failures.append(f"{operation.label}: {unnamed} | {case.as_curl_command()}")
        try:
            case.validate_response(response, checks=checks)
        except (Failure, FailureGroup) as exc:  # failed checks: recorded, the run goes on
            found = list(exc.exceptions) if isinstance(exc, FailureGroup) else [exc]
            for failure in found:
                report.failures.append(f"{operation.label} [{mode.value}] {response.status_code}: "
                                       f"{getattr(failure, 'title', type(failure).__name__)} | "
                                       f"{response.text[:200]} | {case.as_curl_command()}"[:800])

    return one
