"""Safe YAML reading that keeps the file, line and column of every value.

Fleet repositories are edited by people and by pull requests from strangers, so the
reader refuses what a plain loader would accept silently or fatally: duplicate keys
(the second would win unseen), alias bombs ("billion laughs"), custom tags, oversized
files, binary and non-UTF-8 input, nesting deep enough to overflow the C parser's stack
(checked on the event stream before anything is composed), and integer literals too long
to convert. It builds plain dicts/lists/scalars from ruamel's
node graph itself, so positions survive and nothing is ever executed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import CollectionEndEvent, CollectionStartEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from edgefleet.core.diagnostics import Diagnostic, error
from edgefleet.core.source import Location, PathKey, SourceMap

MAX_FILE_BYTES = 64 * 1024 * 1024
# Extra nodes that aliases may add on top of the nodes written in the file. Honest
# reuse of an anchor adds a few; an alias bomb adds billions.
MAX_ALIAS_EXPANSION = 100_000
# Fleet documents nest about eight levels deep. libyaml's composer recurses once per level
# and crashes the process (SIGSEGV) somewhere past ten thousand; Python's own recursion
# limit is near one thousand. A hundred leaves room for any honest document.
MAX_DEPTH = 100
# Longest integer literal read as a number: every numeric field is bounded by 2**53
# (16 digits); longer literals are refused before int() (which refuses > 4300 digits).
MAX_INT_DIGITS = 40

_TAG = "tag:yaml.org,2002:"


@dataclass(frozen=True, slots=True)
class YamlDocument:
    data: Any
    source: SourceMap
    index: int  # position of the document in a multi-document file


class _Refused(Exception):
    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic


def check_text(raw: bytes, path: str) -> tuple[str | None, list[Diagnostic]]:
    """Decode file bytes as UTF-8 text, refusing binary, oversized and non-UTF-8 input."""
    if len(raw) > MAX_FILE_BYTES:
        return None, [error(
            "E001", f"file is {len(raw)} bytes, over the {MAX_FILE_BYTES} byte limit",
            Location(path, 1, 1),
            "split it into several files (devices/*.yaml or devices/*.csv are all read)",
        )]
    if b"\x00" in raw:
        line, col = _line_col(raw, raw.index(b"\x00"))
        return None, [error(
            "E003", "binary file: it contains NUL bytes, not YAML text",
            Location(path, line, col),
            "remove the file, or move it out of the fleet's YAML folders",
        )]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _line_col(raw, exc.start)
        return None, [error(
            "E002", f"not UTF-8: byte 0x{raw[exc.start]:02x} cannot be decoded",
            Location(path, line, col),
            "save the file as UTF-8",
        )]
    return text.removeprefix("\ufeff"), []


def parse_yaml(raw: bytes, path: str) -> tuple[list[YamlDocument], list[Diagnostic]]:
    """Parse every document of one YAML file. Pure: bytes in, documents or errors out."""
    text, diags = check_text(raw, path)
    if text is None:
        return [], diags
    yaml = _composer()
    docs: list[YamlDocument] = []
    try:
        _check_depth(text, path)
        for index, node in enumerate(yaml.compose_all(text)):
            if node is None:
                continue
            _check_expansion(node, path)
            source = SourceMap(path)
            data = _build(node, (), source)
            if data is not None:
                docs.append(YamlDocument(data, source, index))
    except _Refused as refused:
        return [], [refused.diagnostic]
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(path, mark.line + 1, mark.column + 1) if mark else Location(path, 1, 1)
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        return [], [error("E004", f"YAML syntax error: {problem}", loc,
                          "fix the YAML at this place (indentation, quotes, ':' after keys)")]
    except YAMLError as exc:
        return [], [error("E004", f"YAML syntax error: {exc}", Location(path, 1, 1),
                          "fix the YAML syntax")]
    except RecursionError:
        return [], [error("E004", "YAML nested too deeply", Location(path, 1, 1),
                          "flatten the document")]
    if not docs:
        return [], [error("E008", "empty file: no YAML document in it", Location(path, 1, 1),
                          "add a document with apiVersion, kind, metadata and spec, or delete the file")]
    return docs, []


def _composer() -> YAML:
    """libyaml's C parser (ruamel.yaml.clib) where installed: 8x faster, same marks."""
    try:
        import _ruamel_yaml  # noqa: F401

        return YAML(typ="safe", pure=False)
    except ImportError:
        return YAML(typ="safe", pure=True)


def _may_nest_deeply(text: str) -> bool:
    """Cheap over-estimate: can the text hold more than MAX_DEPTH nested collections?

    Each flow level needs a '[' or '{'; each block level needs more indentation (or a
    '- ' / '? ' indicator), and a block sequence may share its parent key's column, hence
    the factor two. Only a text that fails this bound pays for the exact event scan.
    """
    opens = text.count("[") + text.count("{")
    if opens > MAX_DEPTH // 2:
        return True
    # 2 * (indent + 1) + opens > MAX_DEPTH  <=>  some line is indented this far or more:
    widest = (MAX_DEPTH - opens) // 2
    return re.search(rf"(?m)^[ ?:-]{{{widest},}}", text) is not None


def _events(text: str):
    try:
        from _ruamel_yaml import CParser

        parser = CParser(text)
        while (event := parser.get_event()) is not None:
            yield event
    except ImportError:
        yield from YAML(typ="safe", pure=True).parse(text)


def _check_depth(text: str, path: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH before the (recursive) composer sees it.

    The parser's event stream is flat, so counting collection starts and ends is safe at
    any depth, and the scan stops at the first level too deep (libyaml slows down
    quadratically with depth, so reading on would be a cost an attacker chooses).
    Syntax errors are left for the composer, which reports them with their place.
    """
    if not _may_nest_deeply(text):
        return
    depth = 0
    try:
        for event in _events(text):
            if isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    raise _Refused(error(
                        "E004", f"YAML nested too deeply: more than {MAX_DEPTH} levels",
                        Location(path, mark.line + 1, mark.column + 1),
                        "flatten the document; fleet documents need fewer than ten levels"))
            elif isinstance(event, CollectionEndEvent):
                depth -= 1
    except YAMLError:
        return


def _line_col(raw: bytes, offset: int) -> tuple[int, int]:
    line = raw.count(b"\n", 0, offset) + 1
    col = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
    return line, col


def _loc(path: str, node: Node) -> Location:
    return Location(path, node.start_mark.line + 1, node.start_mark.column + 1)


def _check_expansion(root: Node, path: str) -> None:
    """Refuse documents whose aliases would expand far beyond what is written."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Refused(error("E006", "recursive YAML alias: the document refers to itself",
                                 _loc(path, node), "remove the alias (*name) that points at its own anchor"))
        active.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        sizes[key] = total
        return total

    expanded = size(root)
    written = len(sizes)
    if expanded - written > MAX_ALIAS_EXPANSION:
        raise _Refused(error(
            "E006",
            f"YAML aliases expand {written} written nodes into {expanded} (alias bomb?)",
            _loc(path, root),
            f"write values out instead of nesting aliases; at most {MAX_ALIAS_EXPANSION} extra nodes are allowed",
        ))


def _build(node: Node, at: PathKey, source: SourceMap) -> Any:
    source.positions[at] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, ScalarNode):
        value = _scalar(node, source.path)
        if isinstance(value, (int, float)):  # bool too: messages quote what was written (1.10, not 1.1)
            source.texts[at] = node.value
        return value
    _check_collection_tag(node, source.path)
    if isinstance(node, SequenceNode):
        return [_build(child, at + (i,), source) for i, child in enumerate(node.value)]
    if isinstance(node, MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise _Refused(error("E009", "a mapping key must be a plain value",
                                     _loc(source.path, key_node), "use a string key"))
            key = str(_scalar(key_node, source.path))
            if key in out:
                first = source.key_positions[at + (key,)]
                raise _Refused(error(
                    "E005", f"duplicate key '{key}' (first at line {first[0]})",
                    _loc(source.path, key_node),
                    "remove one of the two; YAML would silently keep only the last",
                    related=[(Location(source.path, *first), "first definition")],
                ))
            source.key_positions[at + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _build(value_node, at + (key,), source)
        return out
    raise _Refused(error("E009", "unsupported YAML node", _loc(source.path, node), ""))


def _check_collection_tag(node: Node, path: str) -> None:
    expected = _TAG + ("seq" if isinstance(node, SequenceNode) else "map")
    if str(node.tag) != expected:
        raise _Refused(error("E007", f"YAML tag {node.tag!s} is not allowed", _loc(path, node),
                             "remove the tag; fleet files hold plain lists and mappings"))


def _scalar(node: ScalarNode, path: str) -> Any:
    tag = str(node.tag)
    value: str = node.value
    if not tag.startswith(_TAG) and tag not in ("?", "!"):
        raise _Refused(error("E007", f"custom YAML tag {tag!r} is not allowed",
                             _loc(path, node), "remove the tag; fleet files hold plain values"))
    kind = tag[len(_TAG):] if tag.startswith(_TAG) else "str"
    if kind == "null":
        return None
    if kind == "bool":
        return value.lower() == "true"
    if kind == "int":
        digits = value.replace("_", "")
        if len(digits.lstrip("+-")) > MAX_INT_DIGITS:
            raise _Refused(error(
                "E010", f"integer literal of {len(digits.lstrip('+-'))} digits is too long to be a number",
                _loc(path, node),
                "fleet numbers are at most 2**53 (16 digits); if this is text, put it in quotes"))
        try:
            return int(digits, 0)
        except ValueError:
            return int(digits, 10)
    if kind == "float":
        lowered = value.lower().replace("_", "")
        if lowered.endswith(".inf"):
            return float("-inf") if lowered.startswith("-") else float("inf")
        if lowered == ".nan":
            return float("nan")
        return float(lowered)
    if kind in ("str", "timestamp"):
        return value
    raise _Refused(error("E007", f"YAML tag !!{kind} is not allowed", _loc(path, node),
                         "use a plain string, number, boolean, list or mapping"))
