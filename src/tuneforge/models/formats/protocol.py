"""What a compression format is: the contract every `models/formats/<kind>.py` implements.

gpt-fast's split: an offline transform (`create_quantized`, run once by `tuneforge compress quantize`)
and a runtime conversion (`convert_for_runtime`, run by `models.load` on the saved artifact). What was
done is written to `quantization.json` and the manifest's `compression` (its `format` is the kind),
never guessed from a file name or from which keys a dict happens to have.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar

QUANT_FILE = "quantization.json"

SpecT = TypeVar("SpecT")


class QuantFormat(Protocol):
    """A quantization format: its spec, how a float model becomes it, how a saved one runs."""

    kind: str  # what `compression.format` and `quantization.json`'s `format` declare
    stores_codes: bool  # the artifact holds the quantized tensors (else float weights, converted at load)
    keeps_adapter: bool  # a LoRA adapter can stay unmerged over a base in this format

    def create_quantized(self, model: Any, group_size: int) -> tuple[Any, Any]:
        """Offline: (the quantized model, its spec) from a float model the format may change in place."""
        ...

    def spec_from_json(self, data: dict[str, Any]) -> Any:
        """The spec recorded in an artifact's `quantization.json` (old keys still read)."""
        ...

    def convert_for_runtime(self, path: Path, spec: Any) -> Any:
        """Runtime: the model of the artifact at `path`, with this format's layers and weights loaded."""
        ...


def spec_to_json(spec: Any) -> dict[str, Any]:
    """A spec dataclass as `quantization.json` records it (unset optional parts left out)."""
    return {k: v for k, v in asdict(spec).items() if v is not None}


def spec_from_json(cls: type[SpecT], data: dict[str, Any]) -> SpecT:
    """`cls` from recorded JSON: the fields it knows, defaults for the ones older artifacts lack."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in known})
