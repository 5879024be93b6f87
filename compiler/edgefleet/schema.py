"""JSON Schemas generated from the pydantic models: the single source of truth."""

from __future__ import annotations

import json

from edgefleet.spec import KINDS


def schema_files() -> dict[str, str]:
    """{file name: schema text}, deterministic."""
    files = {}
    for kind, cls in KINDS.items():
        schema = cls.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://edgefleet.dev/schemas/{kind.lower()}.schema.json"
        files[f"{kind.lower()}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return files
