"""Staged rollouts: what reports say per wave, gates, decisions, and the rollout file's `status`.

Pure modules over typed data: `observe` (a verified report -> one device's standing in a
rollout), `aggregate` (counts and percentiles per rollout, wave, class and site), `gates`
(a wave's gates against those counts), `decide` (advance / wait / pause / roll back) and
`document` (the rollout file's YAML, round-trip). The I/O edges live apart: `sources`
(desired-state generations, report envelopes) and `history` (decisions from git); the
use cases are pipeline/status.py and pipeline/promote.py.
"""
