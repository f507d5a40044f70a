"""Move aliases: promotion through the alias's policy (eval gates, approvals by a second identity), forced
promotion by an admin, rollback to the previous holder. Every attempt, refused ones too, is logged.

Gate results are read as plain data, as `tuneforge eval` wrote them into an eval report's
`metrics.gates` (gate, rule, value, passed): the registry never re-evaluates a model.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from typing import Any

from tuneforge.core.registry_config import AliasPolicy, normalize_rule
from tuneforge.registry.open import RegistrySession
from tuneforge.registry.protocol import TAG, GatesFailed, RegistryError, Version
from tuneforge.registry.versions import check_name, eval_manifests, manifest_of, record, resolve

MOVES = ("promote", "rollback")  # the audit actions that move an alias


@dataclass
class Move:
    """What a promote/approve/rollback did: `moved` (the alias now points at `to`) or `pending` (approvals)."""

    model: str
    alias: str
    status: str
    to: int
    previous: int | None = None
    gates: list[dict[str, Any]] = field(default_factory=list)
    approvals_needed: int = 0
    approved_by: list[str] = field(default_factory=list)


def recorded_gates(session: RegistrySession, version: Version) -> list[dict[str, Any]]:
    """Every gate result the version carries: its attached eval reports' and its own manifest's."""
    results = []
    for manifest in [manifest_of(session, version), *eval_manifests(session, version)]:
        for gate in manifest.get("metrics", {}).get("gates", []) or []:
            results.append({**gate, "source": manifest["content_hash"]})
    return results


def check_policy(policy: AliasPolicy, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per gate the policy requires: passed when some recorded result of that gate and rule passed."""
    checked = []
    for name, rule in policy.gates.items():
        same = [r for r in results if r.get("gate") == name and _same_rule(r.get("rule"), rule)]
        passing = next((r for r in same if r.get("passed") is True), None)
        shown = passing or (same[-1] if same else None)
        checked.append({"gate": name, "rule": rule, "value": shown.get("value") if shown else None,
                        "passed": passing is not None,
                        "note": None if same else "no attached eval report checked this gate with this rule"})
    return checked


def _same_rule(recorded: Any, wanted: str) -> bool:
    try:
        return normalize_rule(str(recorded)) == wanted
    except ValueError:
        return False


def _pending_key(alias: str) -> str:
    return f"{TAG}pending.{alias}"


def failing_text(gates: list[dict[str, Any]]) -> str:
    """'domain_accuracy >= 0.8 (got 0.5); general_accuracy_drop <= 0.02 (not measured)'."""
    parts = []
    for g in gates:
        if not g["passed"]:
            got = g["note"] if g.get("note") else ("not measured" if g["value"] is None else f"got {g['value']:.4g}")
            parts.append(f"{g['gate']} {g['rule']} ({got})")
    return "; ".join(parts)


def promote(session: RegistrySession, ref: str, alias: str, force: bool = False, reason: str | None = None) -> Move:
    """Point `alias` at the version `ref` names, if its policy's gates pass; with approvals required the
    request waits for `approve`. `force` (admins only, a reason required) skips gates and approvals."""
    check_name(alias, "alias")
    version = resolve(session, ref)
    policy = session.cfg.policies.get(alias, AliasPolicy())
    current = session.backend.aliases(version.name).get(alias)
    gates = check_policy(policy, recorded_gates(session, version))
    if force:
        return _forced(session, version, alias, current, gates, reason)
    if current == version.number:
        raise RegistryError(f"{version.ref} already holds @{alias}")
    if not all(g["passed"] for g in gates):
        record(session, "refused", version.name, version=version.number, alias=alias, gates=gates, reason=reason)
        raise GatesFailed(f"promotion of {version.ref} to @{alias} refused: gate(s) failed: {failing_text(gates)}",
                          version.ref)
    if policy.approvals > 0:
        request = {"version": version.number, "requested_by": session.user, "reason": reason,
                   "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "approved_by": []}
        session.backend.set_model_tag(version.name, _pending_key(alias), json.dumps(request))
        record(session, "request", version.name, version=version.number, alias=alias, gates=gates, reason=reason,
               approvals_needed=policy.approvals)
        return Move(version.name, alias, "pending", version.number, current, gates, policy.approvals)
    _move(session, version.name, alias, version.number, current, "promote", gates=gates, reason=reason)
    return Move(version.name, alias, "moved", version.number, current, gates)


def _forced(session: RegistrySession, version: Version, alias: str, current: int | None,
            gates: list[dict[str, Any]], reason: str | None) -> Move:
    if session.user not in session.cfg.admins:
        raise RegistryError(f"--force needs the admin role; {session.user!r} is not in registry.admins "
                            f"({', '.join(session.cfg.admins) or 'none configured'})")
    if not reason or not reason.strip():
        raise RegistryError("--force needs --reason: the audit log records why gates and approvals were skipped")
    _move(session, version.name, alias, version.number, current, "promote", gates=gates, reason=reason, forced=True)
    session.backend.delete_model_tag(version.name, _pending_key(alias))
    return Move(version.name, alias, "moved", version.number, current, gates)


def _move(session: RegistrySession, model: str, alias: str, to: int, previous: int | None, action: str,
          **details: Any) -> None:
    session.backend.set_alias(model, alias, to)
    record(session, action, model, alias=alias, **{"from": previous, "to": to}, **details)


def pending(session: RegistrySession, name: str) -> dict[str, dict[str, Any]]:
    """Alias → the promotion request waiting for approval."""
    tags = session.backend.model_tags(name)
    prefix = _pending_key("")
    return {key[len(prefix):]: json.loads(value) for key, value in tags.items() if key.startswith(prefix)}


def approve(session: RegistrySession, name: str, alias: str, reason: str | None = None) -> Move:
    """Approve the waiting promotion of `name` to `alias`, as an identity other than the requester; the alias
    moves once the policy's number of approvals is reached (its gates are checked again then)."""
    waiting = pending(session, name).get(alias)
    if waiting is None:
        raise RegistryError(f"no promotion of {name!r} to @{alias} is waiting for approval")
    if session.user == waiting["requested_by"]:
        raise RegistryError(f"{session.user!r} asked for this promotion and cannot approve it: @{alias} needs an "
                            "approval by another identity (set TUNEFORGE_USER)")
    if session.user in waiting["approved_by"]:
        raise RegistryError(f"{session.user!r} already approved the promotion of {name}/{waiting['version']} to "
                            f"@{alias}")
    policy = session.cfg.policies.get(alias, AliasPolicy())
    version = resolve(session, f"{name}/{waiting['version']}")
    waiting["approved_by"].append(session.user)
    record(session, "approve", name, version=version.number, alias=alias, reason=reason,
           requested_by=waiting["requested_by"])
    if len(waiting["approved_by"]) < policy.approvals:
        session.backend.set_model_tag(name, _pending_key(alias), json.dumps(waiting))
        return Move(name, alias, "pending", version.number, None, [], policy.approvals, waiting["approved_by"])
    gates = check_policy(policy, recorded_gates(session, version))
    if not all(g["passed"] for g in gates):
        raise GatesFailed(f"{version.ref} no longer passes @{alias}'s gates: {failing_text(gates)}", version.ref)
    current = session.backend.aliases(name).get(alias)
    _move(session, name, alias, version.number, current, "promote", gates=gates,
          requested_by=waiting["requested_by"], approved_by=waiting["approved_by"], reason=waiting.get("reason"))
    session.backend.delete_model_tag(name, _pending_key(alias))
    return Move(name, alias, "moved", version.number, current, gates, policy.approvals, waiting["approved_by"])


def holders(entries: list[dict[str, Any]], alias: str) -> list[int]:
    """The alias's holders as the log's moves leave them, oldest first: promote pushes, rollback pops."""
    stack: list[int] = []
    for entry in entries:
        if entry.get("alias") != alias or entry.get("action") not in MOVES:
            continue
        if entry["action"] == "rollback" and stack:
            stack.pop()
        if not stack or stack[-1] != entry["to"]:
            stack.append(entry["to"])
    return stack


def rollback(session: RegistrySession, name: str, alias: str, reason: str | None = None) -> Move:
    """Point `alias` back at the version that held it before its current holder."""
    current = session.backend.aliases(name).get(alias)
    if current is None:
        raise RegistryError(f"model {name!r} has no alias {alias!r} to roll back")
    stack = holders(session.log.entries(name), alias)
    if len(stack) < 2 or stack[-1] != current:
        raise RegistryError(f"@{alias} of {name!r} has no previous holder to roll back to (the log records "
                            f"{len(stack)} holder(s) of it)")
    _move(session, name, alias, stack[-2], current, "rollback", reason=reason)
    return Move(name, alias, "moved", stack[-2], current)
