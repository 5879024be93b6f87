"""One module per use case; each composes the stages and returns a typed result with diagnostics."""
