"""Reading a fleet repository: YAML, CSV, and the typed repository model with positions."""
