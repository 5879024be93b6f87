"""Canonical JSON bytes (RFC 8785, JCS) with a trailing newline.

The same value always gives the same bytes: keys sorted by UTF-16 code units, no
whitespace, ECMAScript number formatting, UTF-8. The trailing newline keeps the files
friendly to git and to people running `cat`. A device whose state did not change gets
the same bytes, so git shows no change and TUF re-signs nothing for it.
"""

from __future__ import annotations

from typing import Any, Mapping

import rfc8785


def canonical(value: Any) -> bytes:
    """The RFC 8785 serialisation of `value` (no trailing newline): for embedding."""
    return rfc8785.dumps(value)


def canonical_document(value: Any) -> bytes:
    """A whole canonical JSON file: RFC 8785 bytes and a newline."""
    return rfc8785.dumps(value) + b"\n"


def join_object(fragments: Mapping[str, bytes]) -> bytes:
    """A canonical object from members already canonicalised (`canonical(value)`).

    Equal to `canonical(dict)` of the decoded members, because JCS orders members by
    the UTF-16 code units of their names and serialises each value on its own. This is
    what lets compile reuse the serialisation of parts shared by many devices.
    """
    ordered = sorted(fragments, key=_utf16_key)
    return b"{" + b",".join(canonical(name) + b":" + fragments[name] for name in ordered) + b"}"


def _utf16_key(name: str) -> bytes:
    return name.encode("utf-16-be")
