"""The one error the optimization engine raises: a bad input, never a failed gate.

A recipe that builds but fails its gates is data (an `Attempt` in the outcome); a
`BuildError` means the request itself cannot be built as declared (corrupt ONNX, missing
or malformed data, a recipe the runtime cannot run). It carries a stable code, a message,
a fix hint and what it is about (`subject`: "source", "calibration", "evaluation",
"accuracy", "recipe" or "toolchain"; `recipe` when one recipe is to blame), so the caller
can place it at the YAML line a person has to change.

Codes (E41x-E43x; `edgefleet build` owns E400-E409):
  E410 source ONNX unreadable or invalid      E411 source ONNX shape not supported
  E412 data file missing                      E413 data file malformed
  E414 data does not fit the model input      E415 accuracy budget unusable
  E417 data file expands beyond the limit     (E416: a corrupt store entry, build/store.py)
  E420 recipe the runtime cannot run          E421 recipe precision not run by the class
  E422 recipe names a node the model lacks    E430 optional toolchain not installed
"""

from __future__ import annotations


class BuildError(Exception):
    def __init__(self, code: str, message: str, hint: str = "", *, subject: str = "source",
                 recipe=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.subject = subject
        self.recipe = recipe  # the Recipe to blame, if any

    def __str__(self) -> str:
        return self.message
