"""Each device's desired state: what it must run, and what a change to the fleet moves.

state.py           DesiredState, the per-device format (schemas/desiredstate.schema.json)
waves.py           a device's wave in a rollout (hash buckets) and which waves are live
canonical.py       RFC 8785 canonical JSON bytes
runtime_config.py  runtime configs rendered from templates/runtime/<runtime>.json.j2
compile.py         fleet + artifacts -> a stream of CompiledDevice (pure)
release.py         release counters already published, read from the previous tree
plan.py            the diff of two compiled fleets, rendered as text, markdown, JSON (pure)
gitio.py           git edges: commit the tree to a branch, extract a revision
"""
