"""Writing a rollout file's `status` and nothing else. Pure: text in, text out.

People format YAML their own way (comments, flow mappings, odd indentation, quoting), and
`promote` must not reformat their `spec`. A full ruamel.yaml round-trip keeps comments and
key order but re-indents the whole document, so the new status is spliced into the
original text instead: ruamel's round-trip loader finds where the top-level `status`
key stands (and where the next top-level key starts), and only those lines are replaced
with the `status` block ruamel.yaml dumps. Everything outside them is kept byte for byte;
a file without a status gets one appended at the end.
"""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from edgefleet.spec.rollout import RolloutStatus


class DocumentError(ValueError):
    """The rollout file cannot take a new status (not one YAML mapping document)."""


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    yaml.preserve_quotes = True
    return yaml


def status_block(status: RolloutStatus) -> str:
    """The `status:` block as YAML text (ends with a newline)."""
    data = status.model_dump(mode="json", exclude_none=False)
    out = io.StringIO()
    _yaml().dump({"status": _clean(data)}, out)
    return out.getvalue()


def _clean(value: Any) -> Any:
    """Drop empty optional members so the block stays short for people to read."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v not in (None, [], {}, "")}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def replace_status(text: str, status: RolloutStatus) -> str:
    """`text` with its top-level `status` replaced by (or extended with) `status`."""
    try:
        docs = list(_yaml().load_all(text))
    except Exception as exc:  # ruamel's errors: the loader reported the file already
        raise DocumentError(f"not valid YAML: {exc}") from None
    docs = [d for d in docs if d is not None]
    if len(docs) != 1 or not isinstance(docs[0], CommentedMap):
        raise DocumentError("a rollout file must hold exactly one YAML mapping document")
    doc: CommentedMap = docs[0]
    lines = text.splitlines(keepends=True)
    block = status_block(status)
    keys = list(doc.keys())
    if "status" not in doc:
        body = "".join(lines)
        if body and not body.endswith("\n"):
            body += "\n"
        return body + block
    start = doc.lc.key("status")[0]
    if doc.lc.key("status")[1] != 0:
        raise DocumentError("the top-level `status` key is indented; write it at column 1")
    after = keys[keys.index("status") + 1:]
    end = doc.lc.key(after[0])[0] if after else len(lines)
    # Comments and blank lines just above the next key belong to it, not to the status.
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1
    if end == len(lines) and lines and lines[-1].startswith("..."):
        end -= 1
    return "".join(lines[:start]) + block + "".join(lines[end:])
