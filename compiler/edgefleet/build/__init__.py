"""Building optimized, accuracy-gated, content-addressed model artifacts per hardware class.

engine/recipes/optimize_*/gates/data/prune: turning one source model into a gated artifact.
key/store/record/provenance/signing/index/orchestrate: addressing, storing, attesting and
scheduling those builds (`edgefleet build`).
"""
