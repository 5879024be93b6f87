"""Where a value came from: file, line and column (1-based), kept beside parsed data.

Every later stage reports problems through these, so a message can always point at
the exact YAML or CSV place a person has to edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PathKey = tuple[str | int, ...]


@dataclass(frozen=True, slots=True, order=True)
class Location:
    path: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.path}:{self.line}:{self.col or 1}"
        return self.path


@dataclass(slots=True)
class SourceMap:
    """Positions of the values of one document, keyed by their path inside it.

    `at(("spec", "ram_mb"))` gives the place of that value; a path that has no entry
    of its own (a missing field, say) falls back to its nearest present parent, which
    is where the person must add it.
    """

    path: str
    positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    # Where each mapping key itself stands: a misspelt field is reported at its key.
    key_positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    # The written text of numeric scalars, so a hint can quote `1.10` rather than 1.1.
    texts: dict[PathKey, str] = field(default_factory=dict)

    def text_at(self, *keys: str | int) -> str | None:
        return self.texts.get(tuple(keys))

    def at(self, *keys: str | int) -> Location:
        return self._nearest(self.positions, tuple(keys))

    def key_at(self, *keys: str | int) -> Location:
        key: PathKey = tuple(keys)
        if key in self.key_positions:
            return self._nearest(self.key_positions, key)
        return self.at(*keys)

    def _nearest(self, table: dict[PathKey, tuple[int, int]], key: PathKey) -> Location:
        while True:
            pos = table.get(key) or self.positions.get(key)
            if pos is not None:
                return Location(self.path, pos[0], pos[1])
            if not key:
                return Location(self.path, 1, 1)
            key = key[:-1]

    def sub(self, *prefix: str | int) -> SubSource:
        """A view of one nested value, with paths relative to it (no copying)."""
        return SubSource(self, tuple(prefix))


@dataclass(frozen=True, slots=True)
class SubSource:
    base: SourceMap
    prefix: PathKey

    @property
    def path(self) -> str:
        return self.base.path

    def at(self, *keys: str | int) -> Location:
        return self.base.at(*self.prefix, *keys)

    def key_at(self, *keys: str | int) -> Location:
        return self.base.key_at(*self.prefix, *keys)

    def text_at(self, *keys: str | int) -> str | None:
        return self.base.text_at(*self.prefix, *keys)

    def sub(self, *prefix: str | int) -> SubSource:
        return SubSource(self.base, self.prefix + tuple(prefix))


@dataclass(frozen=True, slots=True)
class RowSource:
    """Positions of one CSV row: its line and the column where each field starts."""

    path: str
    line: int
    columns: tuple[tuple[str, int], ...]

    def at(self, *keys: str | int) -> Location:
        if keys:
            for name, col in self.columns:
                if name == keys[0]:
                    return Location(self.path, self.line, col)
        return Location(self.path, self.line, 1)

    key_at = at

    def text_at(self, *keys: str | int) -> str | None:
        return None  # CSV cells are text already

    def sub(self, *prefix: str | int) -> RowSource:
        return self


Source = SourceMap | SubSource | RowSource
