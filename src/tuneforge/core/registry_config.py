"""The model registry's configuration: where it lives, who is acting, what each alias demands.

In `core` so that a pipeline file (its `registry:` section) and the serving side can name it; the registry
itself lives in `tuneforge.registry`. Defaults here and only here.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

_RULE = re.compile(r"^\s*(>=|<=|==|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def normalize_rule(rule: str) -> str:
    """'>=0.80' → '>= 0.8': the form `eval.gates` results record a rule in, so the two can be compared."""
    match = _RULE.match(str(rule))
    if not match:
        raise ValueError(f"{rule!r} is not a comparison like '>= 0.8' or '<= 0.02'")
    return f"{match.group(1)} {float(match.group(2)):g}"


class AliasPolicy(_Section):
    """What moving one alias (e.g. production) to a version requires."""

    gates: dict[str, str] = Field(
        default_factory=dict,
        description="Metric → rule, e.g. {domain_accuracy: '>= 0.8', general_accuracy_drop: '<= 0.02'}: each must "
        "have passed, with this very rule, in an eval report attached to the version (run eval with these "
        "eval.gates). Gates the version's own manifest records (e.g. a compress parity check) count too.",
    )
    approvals: int = Field(
        0, ge=0, le=10, description="Approvals needed, each by an identity other than the one who asked; 0 = the "
        "promotion applies at once."
    )

    @field_validator("gates")
    @classmethod
    def _rules(cls, gates: dict[str, str]) -> dict[str, str]:
        return {name: normalize_rule(rule) for name, rule in gates.items()}


def _default_policies() -> dict[str, AliasPolicy]:
    return {"staging": AliasPolicy(), "production": AliasPolicy(approvals=1)}


class RegistryConfig(_Section):
    """`tuneforge registry …` and the pipeline's registry step."""

    tracking_uri: str | None = Field(
        None, description="An MLflow tracking server (http://host:5000) or SQL store URI (sqlite:///…, "
        "postgresql://…) as the store of record. None: the embedded file registry under `root`."
    )
    root: Path = Field(
        Path("registry"), description="Folder of the embedded registry, the audit log (audit.jsonl) and the "
        "local artifact store (objects/)."
    )
    store: str | None = Field(
        None, pattern=r"^s3://[^/\s]+(/\S*)?$", description="Where artifact bytes go: None, the local folder "
        "`root`/objects; or an S3-compatible bucket, s3://BUCKET/PREFIX (AWS S3, MinIO, Ceph…; credentials from "
        "the usual AWS_* variables or ~/.aws), uploaded in parts so multi-GB weights pass S3's 5 GB PUT limit."
    )
    s3_endpoint_url: str | None = Field(
        None, description="The S3 API's URL for a non-AWS store, e.g. http://minio:9000 (None: AWS)."
    )
    s3_part_size_mb: int = Field(
        64, ge=5, le=5120, description="Multipart upload part size in MiB (S3 needs 5 or more; at most 10,000 "
        "parts per file, so 64 MiB parts carry files up to 625 GiB)."
    )
    s3_multipart_threshold_mb: int = Field(
        64, ge=5, description="Files larger than this (MiB) are uploaded in parts, several at once."
    )
    user: str | None = Field(
        None, description="Who is acting. Default: the TUNEFORGE_USER environment variable, else the OS user."
    )
    admins: list[str] = Field(
        default_factory=list, description="Identities allowed `promote --force` (skips gates and approvals; "
        "logged as forced)."
    )
    policies: dict[str, AliasPolicy] = Field(
        default_factory=_default_policies,
        description="Alias → its policy. An alias not listed needs nothing. Default: staging free, production "
        "needs one approval by a second identity.",
    )
    follow_interval_s: float = Field(
        5.0, ge=0, le=3600, description="`tuneforge serve registry:NAME@ALIAS`: seconds between looks at the "
        "alias; when it has moved, the new version is loaded beside the old one, self-tested, and traffic moves "
        "to it. 0: resolve the alias once, at start. (MLflow pushes nothing a server can rely on: this polls.)"
    )
    name: str | None = Field(
        None, pattern=_NAME, description="`tuneforge run`: register the run's adapter under this model name "
        "(with its eval report attached)."
    )
    promote_to: str | None = Field(
        None, pattern=_NAME, description="`tuneforge run`: then promote it to this alias (its policy applies)."
    )
