"""Turning pydantic validation errors into diagnostics that point at the YAML place."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from edgefleet.core.diagnostics import Diagnostic, error
from edgefleet.core.source import Source


def validate_document(cls: type[BaseModel], data: Any, source: Source, schema_hint: str):
    """Validate `data` as `cls`; return (object, []) or (None, diagnostics)."""
    try:
        return cls.model_validate(data), []
    except ValidationError as exc:
        return None, [_diagnostic(cls, err, source, schema_hint) for err in exc.errors()]


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _diagnostic(cls: type[BaseModel], err: dict, source: Source, schema_hint: str) -> Diagnostic:
    loc = tuple(p for p in err["loc"] if not _is_union_tag(p))
    kind = err["type"]
    field = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        allowed = _fields_at(cls, loc[:-1])
        guess = difflib.get_close_matches(field, allowed, n=1)
        hint = f"did you mean '{guess[0]}'?" if guess else (
            f"allowed here: {', '.join(sorted(allowed))}" if allowed else "remove it")
        return error("E103", f"unknown field '{_dotted(loc)}'", source.key_at(*loc), hint)
    if kind == "missing":
        return error("E104", f"missing required field '{_dotted(loc)}'", source.at(*loc[:-1]),
                     f"add '{field}:' here; {schema_hint}")
    value = err.get("input")
    shown = repr(value) if isinstance(value, (str, int, float, bool)) or value is None else type(value).__name__
    written = source.text_at(*loc) if isinstance(value, (int, float)) else None
    if written is not None:
        shown = written  # as the YAML says it: true, 1.10, 0x1F
    expected = _EXPECTED.get(kind.split("_")[0], "")
    description = _description_at(cls, loc)
    hint = "; ".join(filter(None, [f"'{field}' takes {expected}" if expected and field else "",
                                  description, schema_hint]))
    if kind in ("string_type",) and isinstance(value, (int, float)):
        hint = f'put the value in quotes: "{written or str(value).lower()}"'

    message = err["msg"].removeprefix("Value error, ")  # our validators' own words
    return error("E105", f"{_dotted(loc) or 'document'}: {message} (got {shown})",
                 source.at(*loc), hint)


_EXPECTED = {"int": "a whole number", "float": "a number", "bool": "true or false",
             "string": "text", "dict": "a mapping", "list": "a list"}


def _description_at(cls: type[BaseModel], loc: tuple) -> str:
    """The field's own description from the model, so hints never repeat the docs."""
    named = [p for p in loc if isinstance(p, str)]
    if not named:
        return ""
    parent = _model_at(cls, loc[:-1]) if loc and isinstance(loc[-1], str) else None
    field = parent.model_fields.get(named[-1]) if parent else None
    return (field.description or "") if field else ""


def _is_union_tag(part: Any) -> bool:
    # pydantic adds the member type's name to the location inside unions/tagged unions.
    return isinstance(part, str) and (part.startswith("function-") or part in {
        "str", "int", "float", "bool", "list", "dict", "none", "[key]"})


def _fields_at(cls: type[BaseModel], loc: tuple) -> list[str]:
    """Field names allowed at a location, for 'did you mean' hints."""
    model = _model_at(cls, loc)
    return list(model.model_fields) if model else []


def _model_at(cls: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    current: Any = cls
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) in (list, dict):
            current = typing.get_args(current)[-1]
        else:
            return None
    current = _unwrap(current)
    if typing.get_origin(current) in (list, dict):
        current = _unwrap(typing.get_args(current)[-1])
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = members[0] if len(members) == 1 else tp
            if len(members) != 1:
                return tp
        else:
            return tp
