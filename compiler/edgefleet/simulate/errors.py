"""The simulator's one error type: a code (E8xx), what is wrong, and what to do."""

from __future__ import annotations


class SimulationError(Exception):
    def __init__(self, code: str, message: str, hint: str = "", path: str = ""):
        super().__init__(message)
        self.code, self.message, self.hint, self.path = code, message, hint, path
