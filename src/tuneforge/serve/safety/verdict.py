"""Plain data that guards return: findings, and the verdict they add up to."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tuneforge.core.safety_config import ACTION_RANK, Action


@dataclass(frozen=True)
class Finding:
    """One guard's finding: which guard, what it does about it, why, and where.

    `spans` are (start, end) character offsets in the text the guard read: the message's text for a
    request (`message` is its index in the request's messages), the answer's text for a response.
    """

    guard: str
    action: Action
    reason: str
    spans: tuple[tuple[int, int], ...] = ()
    message: int | None = None
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (spans as lists)."""
        out = asdict(self)
        out["spans"] = [list(s) for s in self.spans]
        return out


@dataclass
class Verdict:
    """All findings on one request or one response. `blocked`: refuse / cut; `flagged`: a human should look."""

    findings: list[Finding] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return any(f.action == "block" for f in self.findings)

    @property
    def flagged(self) -> bool:
        return any(ACTION_RANK[f.action] >= ACTION_RANK["flag"] for f in self.findings)

    @property
    def reasons(self) -> list[str]:
        return [f"{f.guard}: {f.reason}" for f in self.findings]

    def add(self, *findings: Finding) -> None:
        self.findings.extend(findings)

    def merged(self, other: Verdict) -> Verdict:
        """A new verdict with both sets of findings (a request's and its response's)."""
        return Verdict([*self.findings, *other.findings])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: blocked, flagged and every finding."""
        return {"blocked": self.blocked, "flagged": self.flagged, "findings": [f.to_dict() for f in self.findings]}
