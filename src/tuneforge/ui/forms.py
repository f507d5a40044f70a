"""Forms generated from a config section's JSON schema, and form values validated back into that section.

The schema (`TrainConfig.model_json_schema()`, …) gives each field's type, choices, bounds and description;
the values shown are the section's current ones (the pipeline file's, else the config model's defaults), so
no default is written here. A submitted form is validated by the same pydantic model as a YAML file: an error
names the dotted field (`train.lr`) and the bad value. What the result sets is what the config set plus the
fields changed in the form, never a shown default, so "left unset" keeps its meaning in a UI job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tuneforge.core.config import SectionT
from tuneforge.core.errors import ConfigError


class FormError(ConfigError):
    """A submitted form that does not validate: `fields` maps each bad dotted field to its message."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields
        super().__init__("invalid form:\n  " + "\n  ".join(f"{k}: {v}" for k, v in fields.items()))


@dataclass
class Field:
    """One input: `kind` is select, checkbox, number, text or yaml (lists, mappings, unions: typed as YAML)."""

    name: str  # dotted, with the section's prefix: train.lora.r
    label: str
    kind: str
    value: Any
    description: str = ""
    options: list[str] = field(default_factory=list)
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None


@dataclass
class Group:
    """A nested section (train.lora) with its own fields."""

    name: str
    label: str
    description: str
    fields: list[Field | Group]


def _resolve(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = prop.get("$ref")
    return {**defs[ref.split("/")[-1]], **{k: v for k, v in prop.items() if k != "$ref"}} if ref else prop


def _scalar(prop: dict[str, Any], defs: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """(the one non-null scalar alternative, nullable) — None when the type is not a single scalar."""
    options = [_resolve(p, defs) for p in prop.get("anyOf", [prop])]
    nullable = any(p.get("type") == "null" for p in options)
    rest = [p for p in options if p.get("type") != "null"]
    if len(rest) == 1 and (rest[0].get("type") in ("string", "integer", "number", "boolean") or "enum" in rest[0]):
        return rest[0], nullable
    return None, nullable


def _label(name: str) -> str:
    return name.replace("_", " ")


def build(section: type[BaseModel], values: dict[str, Any], prefix: str, skip: tuple[str, ...] = ()
          ) -> list[Field | Group]:
    """The form of `section` at `prefix` (e.g. `train`), filled with `values` (its current model_dump)."""
    schema = section.model_json_schema()
    return _fields(schema, schema.get("$defs", {}), values, prefix, skip)


def _fields(schema: dict[str, Any], defs: dict[str, Any], values: dict[str, Any], prefix: str,
            skip: tuple[str, ...]) -> list[Field | Group]:
    out: list[Field | Group] = []
    for name, raw in schema.get("properties", {}).items():
        if name in skip:
            continue
        prop = _resolve(raw, defs)
        dotted, value = f"{prefix}.{name}", values.get(name)
        description = prop.get("description") or raw.get("description") or ""
        if "properties" in prop and isinstance(value, dict):
            out.append(Group(dotted, _label(name), description, _fields(prop, defs, value, dotted, ())))
            continue
        scalar, nullable = _scalar(prop, defs)
        if scalar is None:
            shown = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
            shown = shown.removesuffix("...").strip()  # a scalar dumped alone ends its document with "..."
            out.append(Field(dotted, _label(name), "yaml", shown, description, nullable=nullable))
        elif "enum" in scalar:
            out.append(Field(dotted, _label(name), "select", value, description,
                             options=[str(o) for o in scalar["enum"]], nullable=nullable))
        elif scalar.get("type") == "boolean":
            out.append(Field(dotted, _label(name), "checkbox", bool(value), description))
        elif scalar.get("type") in ("integer", "number"):
            low = scalar.get("minimum", scalar.get("exclusiveMinimum"))
            high = scalar.get("maximum", scalar.get("exclusiveMaximum"))
            out.append(Field(dotted, _label(name), "number", "" if value is None else value, description,
                             nullable=nullable, minimum=low, maximum=high))
        else:
            out.append(Field(dotted, _label(name), "text", "" if value is None else value, description,
                             nullable=nullable))
    return out


def _flat(items: list[Field | Group]) -> dict[str, Field]:
    out: dict[str, Field] = {}
    for item in items:
        if isinstance(item, Group):
            out.update(_flat(item.fields))
        else:
            out[item.name] = item
    return out


def _convert(item: Field, raw: Any) -> Any:
    """A submitted value as the type the field's schema asks for (pydantic checks the rest)."""
    if item.kind == "checkbox":
        return raw in (True, "true", "on", "1", 1)
    text = "" if raw is None else str(raw)
    if item.kind in ("number", "text", "select") and not text.strip():
        return None if item.nullable or item.kind == "number" else text
    if item.kind == "number":
        return text.strip()  # pydantic parses "2e-4" and "3"; "abc" fails there with the field's name
    if item.kind == "yaml":
        try:
            return yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise FormError({item.name: f"not valid YAML ({getattr(exc, 'problem', exc)})"}) from None
    return text


def parse(current: SectionT, prefix: str, submitted: dict[str, Any], skip: tuple[str, ...] = ()) -> SectionT:
    """Validate the submitted `{dotted field: raw value}` on top of `current` into a new section of its type.

    Unknown fields are refused by name. The result sets exactly what `current` sets plus the submitted fields
    whose value differs from the one the form showed: a page posts every field, and a field left as shown
    (a default the config never set) stays unset, so what derives it when unset (the training recipe, the
    eval's answer budget) still does, as it would for the same YAML under `tuneforge run`."""
    section = type(current)
    shown = current.model_dump(mode="json")
    known = _flat(build(section, shown, prefix, skip))
    data = yaml.safe_load(yaml.safe_dump(shown))  # a deep, plain copy
    errors: dict[str, str] = {}
    paths: list[list[str]] = []
    for name, raw in submitted.items():
        item = known.get(name)
        if item is None:
            errors[name] = "unknown field"
            continue
        try:
            value = _convert(item, raw)
        except FormError as exc:
            errors.update(exc.fields)
            continue
        parts = name[len(prefix) + 1:].split(".")
        _put(data, parts, value)
        paths.append(parts)
    try:
        validated = section.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join([prefix, *(str(p) for p in err["loc"])])
            # the error of one member of a union (`batch_size.int`): report it on the field itself
            while loc not in known and "." in loc and loc != prefix:
                loc = loc.rsplit(".", 1)[0]
            got = err.get("input")
            shown_input = "" if isinstance(got, dict) else f" (got {got!r})"
            errors.setdefault(loc, f"{err['msg']}{shown_input}")
    if errors:  # every bad field at once, not one per submission
        raise FormError(errors)
    # compared as validated, so "2e-4" posted for a shown 0.0002 is no change
    result = validated.model_dump(mode="json")
    given = current.model_dump(mode="json", exclude_unset=True)
    for parts in paths:
        if _get(result, parts) != _get(shown, parts):
            _put(given, parts, _get(result, parts))
    return section.model_validate(given)


def _get(data: dict[str, Any], parts: list[str]) -> Any:
    for part in parts:
        data = data[part]
    return data


def _put(data: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        data = data.setdefault(part, {})
    data[parts[-1]] = value
