"""Pure rules over a loaded repository: cross-references, selectors, recipe chains, build needs."""
