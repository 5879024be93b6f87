"""devices/*.csv: the inventory of large fleets, one device a row.

Columns: id, hardware_class, site, labels ("key=value;key=value"), public_key.
Rows are parsed lazily so a million-device inventory streams.
"""

from __future__ import annotations

import csv
import io
from typing import Iterator

from edgefleet.core.diagnostics import Diagnostic, error
from edgefleet.core.source import Location, RowSource
from edgefleet.spec.device import CSV_COLUMNS


def parse_labels(text: str) -> dict[str, str] | None:
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            return None
        labels[key.strip()] = value.strip()
    return labels


def iter_csv_rows(text: str, path: str) -> Iterator[tuple[dict | None, RowSource, list[Diagnostic]]]:
    """Yield (device data, its place, diagnostics) per row; a bad header yields one error."""
    lines = io.StringIO(text, newline="")
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        yield None, RowSource(path, 1, ()), [_unreadable(path, reader.line_num or 1, exc)]
        return
    if header is None:
        yield None, RowSource(path, 1, ()), [error(
            "E008", "empty file: no CSV header", Location(path, 1, 1),
            f"start with the header: {','.join(CSV_COLUMNS)}")]
        return
    header = [h.strip() for h in header]
    if tuple(header) != CSV_COLUMNS:
        yield None, RowSource(path, 1, ()), [error(
            "E106", f"CSV header is {','.join(header)!r}", Location(path, 1, 1),
            f"the header must be exactly: {','.join(CSV_COLUMNS)}")]
        return
    raw_lines = text.splitlines()
    line_no = 1
    while True:
        try:
            row = next(reader, None)
        except csv.Error as exc:
            # csv refuses fields over its limit (128 KiB) and stray quotes; the rest of the
            # file cannot be read reliably after that, so it is one error for the file.
            yield None, RowSource(path, reader.line_num, ()), [_unreadable(path, reader.line_num, exc)]
            return
        if row is None:
            return
        line_no = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        columns = _columns(raw_lines[line_no - 1] if line_no <= len(raw_lines) else "", header)
        where = RowSource(path, line_no, columns)
        if len(row) != len(CSV_COLUMNS):
            yield None, where, [error(
                "E106", f"row has {len(row)} fields, expected {len(CSV_COLUMNS)}",
                Location(path, line_no, 1), f"give each row: {','.join(CSV_COLUMNS)}")]
            continue
        data = dict(zip(CSV_COLUMNS, (cell.strip() for cell in row)))
        labels = parse_labels(data["labels"])
        if labels is None:
            yield None, where, [error(
                "E105", f"labels: cannot read {data['labels']!r}", where.at("labels"),
                "write labels as key=value pairs separated by ';', e.g. line=3;zone=north")]
            continue
        data["labels"] = labels
        yield data, where, []


def _unreadable(path: str, line: int, exc: csv.Error) -> Diagnostic:
    return error("E106", f"CSV cannot be read here: {exc}", Location(path, line, 1),
                 "a device row has five short fields; check for a missing closing quote or a runaway field")


def _columns(line: str, header: list[str]) -> tuple[tuple[str, int], ...]:
    """Column (1-based) where each field starts; quoted commas are rare in inventories."""
    if '"' not in line:  # the usual row: each comma starts a field (str.find runs in C)
        starts, at = [1], line.find(",")
        while at >= 0 and len(starts) < len(header):
            starts.append(at + 2)
            at = line.find(",", at + 1)
        return tuple(zip(header, starts))
    starts, col, quoted = [1], 1, False
    for ch in line:
        col += 1
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            starts.append(col)
    return tuple(zip(header, starts))
