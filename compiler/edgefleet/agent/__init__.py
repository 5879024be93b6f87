"""The device agent: reconcile one device toward its signed desired state.

agent-core: `machine` (pure transitions) and `journal` (its persisted form), `cycle` (the
driver: one reconcile cycle), `daemon` (the loop and its backoff), `fetch_git` / `fetch_http`
(the tree), `artifacts` (blobs by digest), `homes` (each workload's slots and journal),
`slots` (A/B and the `current` link), `runner`
(onnxruntime / OpenVINO), `probe` (health probe and confirm), `registry` (what serves),
`reporting` (conditions, status.json, reports), `status`, `durable`, `errors` (E6xx).
agent-io: `identity`, `conditions`, `serving` (KServe v2), `telemetry`, `report`,
`status_remote`, `templates`. The README section "The device agent" describes it all.
"""
