"""The `edgefleet demo` scenario: the example fleet, a good version rolled out wave by wave, then
a bad version caught in its first wave and rolled back.

The story, as scenario steps the engine applies to its copy of the fleet (each one a git commit,
then the loop recompiles):

1. at the start, `demo-speed`: the example rollout meter-digits-1-1 (1.0.0 -> 1.1.0) keeps its
   waves, thresholds and maintenance window; its soaks, timeouts and spread shrink (10m, 4h,
   10m) so the simulated run is hours, not four days, and its latency-percentile gates go
   (simulated devices serve no traffic, so those gates could never pass);
2. once meter-digits-1-1 is complete, `bad-version`: meter-digits 1.2.0 is added (ONNX files
   shipped as package data, `demo_assets/`, made by `demo/make_model.py`) and the finished
   rollout file is replaced by meter-digits-1-2 (1.1.0 -> 1.2.0, `rollback.on_gate_failure:
   rollback`), whose first wave is one device of every hardware class.

1.2.0 is accurate everywhere, and on the low-power detectors (intel-lowpower-detector, whose
512 KB artifact cap leaves them the compact `hires` variant) it is too slow: ~2.3 GMAC per image.
Latency is simulated honestly: measured CPU latency on this machine times a declared per-class
factor (`LATENCY_FACTORS`, never below 1, the engine's rule: a device cannot be simulated
faster than this CPU). The probe sees the scaled latency, fails on that class (E610), the
canary's failure gate fails, and promote rolls the rollout back.

Text transforms are pure (`demo_speed_rollout`, `with_version`, `bad_rollout_text`,
`canary_devices`); the `apply_*` functions are the thin I/O the engine calls on the work tree.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

MODEL = "meter-digits"
GOOD_ROLLOUT = "meter-digits-1-1"
BAD_ROLLOUT = "meter-digits-1-2"
GOOD_VERSION = "1.1.0"
BAD_VERSION = "1.2.0"
BAD_VARIANTS = (  # best first, like the example's full/student
    ("full", "the example's wide CNN, trained longer than 1.1.0; ~550k parameters, ~1.6 MMAC"),
    ("hires", "compact high-resolution reader (8x8 upsampled to 128x128, eight 3x3 convs); ~340k parameters, "
              "~2.3 GMAC per image"),
)
SLOW_CLASS = "intel-lowpower-detector"
ASSETS = "demo_assets"

# Declared latency factors against this machine's CPU (one AMD EPYC core with AVX-512 VNNI, where
# they were chosen; see NOTES/README "Demo"). The GPU classes are simulated at CPU speed (factor 1:
# the simulator cannot run faster than this CPU), which is pessimistic for them; the CPU-only cart
# (i5-1345U, AVX2 only, 28 W) is declared 2x slower; the fanless 15 W detector 5x slower.
LATENCY_FACTORS: dict[str, float] = {
    "factory-gateway-gpu": 1.0,
    "jetson-vision-standard": 1.0,
    "medical-cart-cpu": 2.0,
    "intel-lowpower-detector": 5.0,
}

# The example's rollout at demo speed: same waves and thresholds, shorter soaks, timeouts, spread.
DEMO_SOAK, DEMO_TIMEOUT, DEMO_SPREAD = "10m", "4h", "10m"
# Simulated devices serve no application traffic, so their reports carry no inference latency and
# a latency-percentile gate could only ever be inconclusive (the rollout would wait forever). The
# demo's latency guard is the probe's per-class `latency_budget_ms`, which every device checks.
DEMO_DROPPED_GATES = ("max_latency_p50_ms", "max_latency_p95_ms", "max_latency_p99_ms")
# The simulated clock starts inside the Brno plant's maintenance window (22:00-06:00 Prague),
# so its robots may switch during the run, as the example's rollout says they only may then.
DEMO_START = datetime(2026, 11, 23, 21, 0, tzinfo=timezone.utc)
DEMO_DURATION_S = 8 * 3600.0       # an upper bound; the run stops when both rollouts settle
DEMO_TICK_S = 1200.0              # one poll per device per 20 simulated minutes
DEMO_PROMOTE_EVERY = 1            # status -> promote -> compile after every poll round
DEMO_HTTP_SHARE = 0.0             # every device polls git (see docs/demo-notes.md: HTTP-mirror devices, E551)
DEFAULT_DEVICES = 40  # "40+ devices": 48 measured 320 s on an idle machine, over the 5-minute budget


class DemoAssetError(LookupError):
    """A demo asset missing from the install (a broken package)."""


def asset_bytes(name: str) -> bytes:
    """A file of the packaged demo assets, e.g. `meter-digits-1.2.0/hires.onnx`."""
    node = resources.files("edgefleet") / ASSETS
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise DemoAssetError(f"{ASSETS}/{name}: not an asset name")
        node = node / part
    if not node.is_file():
        raise DemoAssetError(f"{ASSETS}/{name}: missing from this install of edgefleet")
    return node.read_bytes()


def bad_model_files() -> dict[str, bytes]:
    """variant -> ONNX bytes of meter-digits 1.2.0."""
    return {name: asset_bytes(f"{MODEL}-{BAD_VERSION}/{name}.onnx") for name, _ in BAD_VARIANTS}


# -- pure text transforms --------------------------------------------------------------------------

def _yaml():
    from ruamel.yaml import YAML

    y = YAML()  # round trip: comments and order stay
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)  # the example fleet's style
    return y


def _dump(doc) -> str:
    out = io.StringIO()
    _yaml().dump(doc, out)
    return out.getvalue()


def demo_speed_rollout(text: str) -> str:
    """The good rollout at demo speed: its waves, thresholds and maintenance window as written;
    soaks, timeouts and spread shortened; no latency-percentile gates (see DEMO_DROPPED_GATES)."""
    doc = _yaml().load(text)
    spec = doc["spec"]
    for wave in spec["waves"]:
        gates = wave["gates"]
        gates["soak"], gates["timeout"] = DEMO_SOAK, DEMO_TIMEOUT
        for gate in DEMO_DROPPED_GATES:
            if gate in gates:
                del gates[gate]
    if "spread" in spec:
        spec["spread"] = DEMO_SPREAD
    out = _dump(doc)
    # The example's own comment on the spread line would now be wrong.
    return re.sub(r"(?m)^(  spread: " + DEMO_SPREAD + r"\s*#).*$", r"\1 demo speed (the example: 30m)", out)


def with_version(model_text: str, digests: dict[str, str]) -> str:
    """The model document with version BAD_VERSION added (variants in BAD_VARIANTS order)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    doc = _yaml().load(model_text)
    versions = doc["spec"]["versions"]
    if any(str(v["version"]) == BAD_VERSION for v in versions):
        raise ValueError(f"{MODEL} already has a version {BAD_VERSION}")
    variants = CommentedSeq()
    for name, description in BAD_VARIANTS:
        variants.append(CommentedMap([("name", name), ("description", description),
                                      ("source", f"models/{MODEL}/{BAD_VERSION}/{name}.onnx"),
                                      ("sha256", digests[name])]))
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    versions.append(CommentedMap([("version", DoubleQuotedScalarString(BAD_VERSION)), ("variants", variants)]))
    return _dump(doc)


def canary_devices(inventory: list[tuple[str, str]]) -> list[str]:
    """One device of every hardware class (the first by id): a canary that meets every class."""
    first: dict[str, str] = {}
    for device, cls in sorted(inventory):
        first.setdefault(cls, device)
    return sorted(first.values())


def bad_rollout_text(canary: list[str]) -> str:
    devices = ", ".join(canary)
    return f"""# yaml-language-server: $schema=../../schemas/rollout.schema.json
# edgefleet demo: meter-digits 1.2.0 everywhere, starting with one device of every hardware class.
# It replaces the finished meter-digits-1-1 (a device is in one rollout per model).
apiVersion: edgefleet/v1
kind: Rollout
metadata:
  name: {BAD_ROLLOUT}
spec:
  model: {MODEL}
  from_version: "{GOOD_VERSION}"
  to_version: "{BAD_VERSION}"
  selector: {{}}
  waves:
    - name: canary
      selector:
        devices: [{devices}]
      gates:
        min_reporting: 0.9
        max_failure_rate: 0.0
        soak: {DEMO_SOAK}
        timeout: {DEMO_TIMEOUT}
    - name: half
      percent: 50
      gates:
        min_reporting: 0.9
        max_failure_rate: 0.02
        soak: {DEMO_SOAK}
        timeout: {DEMO_TIMEOUT}
    - name: all
      percent: 100
      gates:
        min_reporting: 0.8
        max_failure_rate: 0.02
        soak: {DEMO_SOAK}
        timeout: {DEMO_TIMEOUT}
  rollback:
    on_gate_failure: rollback
  spread: {DEMO_SPREAD}
"""


def read_inventory(root: Path) -> list[tuple[str, str]]:
    """(device id, hardware class) of every device of the fleet at `root`, as the loader reads them."""
    from edgefleet.pipeline.validate import validate_repository

    repo, _ = validate_repository(root)
    return sorted((d.doc.id, d.doc.hardware_class) for d in repo.devices)


# -- the steps: thin I/O on the engine's work tree -------------------------------------------------

def apply_demo_speed(root: Path) -> str:
    path = root / "rollouts" / f"{GOOD_ROLLOUT}.yaml"
    path.write_text(demo_speed_rollout(path.read_text(encoding="utf-8")), encoding="utf-8")
    return (f"demo speed for {GOOD_ROLLOUT}: soaks {DEMO_SOAK}, timeouts {DEMO_TIMEOUT}, spread {DEMO_SPREAD}, "
            "no latency-percentile gates (simulated devices serve no traffic)")


def apply_bad_version(root: Path) -> str:
    import hashlib

    folder = root / "models" / MODEL / BAD_VERSION
    folder.mkdir(parents=True, exist_ok=False)
    digests = {}
    for name, data in bad_model_files().items():
        (folder / f"{name}.onnx").write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    model = root / "models" / f"{MODEL}.yaml"
    model.write_text(with_version(model.read_text(encoding="utf-8"), digests), encoding="utf-8")
    canary = canary_devices(read_inventory(root))
    (root / "rollouts" / f"{GOOD_ROLLOUT}.yaml").unlink()
    (root / "rollouts" / f"{BAD_ROLLOUT}.yaml").write_text(bad_rollout_text(canary), encoding="utf-8")
    return (f"{MODEL} {BAD_VERSION}; {BAD_ROLLOUT} ({GOOD_VERSION} -> {BAD_VERSION}, canary {', '.join(canary)}) "
            f"replaces the finished {GOOD_ROLLOUT}")


class DemoBuildError(RuntimeError):
    """Building the demo's artifacts failed; `diagnostics` say why."""

    def __init__(self, message: str, diagnostics: tuple = ()):
        super().__init__(message)
        self.diagnostics = diagnostics


def prepare_store(work: Path, store: Path, on_done=None) -> dict[str, int]:
    """Build every artifact the demo will need into `store`, ahead of the simulation.

    The engine builds its fleet once at the start and only recompiles after a scenario step, so
    1.2.0's artifacts must already be in the store it starts from. A copy of the example fleet
    is built as the demo starts (1.0.0, 1.1.0), then with the bad-version step applied (1.2.0).
    The store is content-addressed by build key: a second demo finds everything cached.
    Returns the build counts summed (built, cache_hits, failed, total).
    """
    from edgefleet.core.resources import copy_example_fleet
    from edgefleet.pipeline.build import BuildRequest, build

    root = copy_example_fleet(work / "prebuild-fleet")
    totals = {"total": 0, "built": 0, "cache_hits": 0, "failed": 0}
    for step in (apply_demo_speed, apply_bad_version):
        step(root)
        outcome = build(BuildRequest(root=root, store=str(store)), on_done=on_done)
        for k, v in outcome.counts.items():
            totals[k] += v
        if not outcome.ok:
            raise DemoBuildError(f"building the demo's artifacts ({step.__name__}) failed", outcome.diagnostics)
    return totals


def apply_nothing(root: Path) -> str:
    """The last step changes nothing: it is the end of the story (the engine commits no empty commit)."""
    return f"{BAD_ROLLOUT} rolled back: nothing left to do"


def scenario() -> list:
    from edgefleet.simulate.engine import ScenarioStep

    # The engine stops once no step is pending and every rollout *it has seen* is terminal; the
    # bad rollout is seen only at the promote after its step, so without the last step the run
    # would stop the moment meter-digits-1-1 completes. It keeps the run going to the rollback
    # (or to DEMO_DURATION_S when the rollback never comes, and the demo fails).
    return [ScenarioStep("demo-speed", None, apply_demo_speed),
            ScenarioStep("bad-version", f"rollout:{GOOD_ROLLOUT}:complete", apply_bad_version),
            ScenarioStep("the-end", f"rollout:{BAD_ROLLOUT}:rolled_back", apply_nothing)]


def config(repo: Path, *, devices: int = DEFAULT_DEVICES, seed: int = 0, report_dir: Path | None = None,
           store: Path | None = None):
    from edgefleet.simulate.engine import SimulationConfig

    return SimulationConfig(repo=repo, devices=devices, duration_s=DEMO_DURATION_S, seed=seed,
                            report_dir=report_dir, latency_factors=dict(LATENCY_FACTORS), scenario=scenario(),
                            stop_when_settled=True, tick_s=DEMO_TICK_S, start=DEMO_START, store=store,
                            promote_every=DEMO_PROMOTE_EVERY, http_share=DEMO_HTTP_SHARE)


# -- the verdict -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DemoVerdict:
    good_complete: bool       # meter-digits-1-1 reached complete
    bad_rolled_back: bool     # meter-digits-1-2 was rolled back ...
    caught_in_wave: int | None  # ... by a decision in this wave (0: the first)
    invariants_hold: bool

    @property
    def ok(self) -> bool:
        return self.good_complete and self.bad_rolled_back and self.caught_in_wave == 0 and self.invariants_hold

    def lines(self) -> list[str]:
        return [
            f"{'ok' if self.good_complete else 'NOT OK'}: {GOOD_ROLLOUT} ({MODEL} 1.0.0 -> {GOOD_VERSION}) "
            + ("completed wave by wave" if self.good_complete else "did not complete"),
            f"{'ok' if self.bad_rolled_back and self.caught_in_wave == 0 else 'NOT OK'}: {BAD_ROLLOUT} "
            f"({GOOD_VERSION} -> {BAD_VERSION}) "
            + (f"rolled back in wave {self.caught_in_wave}" if self.bad_rolled_back else "was not rolled back")
            + (" (the first)" if self.caught_in_wave == 0 else ""),
            f"{'ok' if self.invariants_hold else 'NOT OK'}: "
            + ("every invariant holds" if self.invariants_hold else "an invariant broke"),
        ]


def judge(record) -> DemoVerdict:
    """What the demo promises, read from the record: decisions and invariants."""
    complete = any(d.rollout == GOOD_ROLLOUT and d.action == "complete" for d in record.decisions)
    rollback = next((d for d in record.decisions if d.rollout == BAD_ROLLOUT and d.action == "rollback"), None)
    return DemoVerdict(complete, rollback is not None, rollback.wave if rollback else None, record.ok)


def parse_inventory_csv(text: str) -> list[tuple[str, str]]:
    """(id, hardware_class) rows of a device CSV (what the simulator writes); for tests and tools."""
    return sorted((r["id"], r["hardware_class"]) for r in csv.DictReader(io.StringIO(text)))


_VERSION_LINE = re.compile(r'(?m)^\s+- version:\s*"?([0-9][^"\s]*)"?\s*$')


def model_versions(model_text: str) -> list[str]:
    return _VERSION_LINE.findall(model_text)
