"""The use cases of edgefleet, one module each; the CLI, the agent and tests call these.

validate.py  load and check a fleet repository
explain.py   why a model version fits a hardware class (or not), and what the build shipped
build.py     plan, build, gate and store every needed artifact
compile.py   the signed per-device desired state (and its commit to a branch)
plan.py      which devices a change between two revisions moves
verify.py    one device's desired state, verified offline as the device does
keys.py      the signing keys, kept out of fleet repositories
(agent, status and promote join here as their own modules.)

Each function takes typed inputs (a loaded or discovered repository, a store, keys, a
clock `now`) and returns a typed result carrying its diagnostics; none prints. Like
Flux's reconcilers, a use case is a short list of steps (`common.run_steps`), each with
one job, stopping at the first step that reports an error.
"""
