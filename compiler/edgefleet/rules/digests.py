"""The source-digest rule: a model file must hash to the sha256 its YAML declares.

One definition for validation (E301, at the variant's `sha256:`) and the build's own
pre-flight (E401, which never trusts that validation ran). Pure: the caller hashes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DigestMismatch:
    path: str  # the model file, relative to the repository root
    actual: str
    declared: str

    @property
    def message(self) -> str:
        return f"'{self.path}' has sha256 {self.actual}, but the model YAML declares {self.declared}"

    @property
    def hint(self) -> str:
        return (f"if the new file is intended, set sha256: {self.actual}; otherwise restore the file "
                f"that was reviewed (git checkout -- {self.path})")


def digest_mismatch(path: str, actual: str, declared: str) -> DigestMismatch | None:
    """None when the file's real sha256 is the declared one."""
    return None if actual == declared else DigestMismatch(path, actual, declared)
