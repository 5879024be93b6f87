"""Can a class's runtime run this model: its operators and its opset.

One answer per runtime, each from the most real source available here:

* onnxruntime: the kernels the installed onnxruntime registers (an operator runs if a
  kernel covers the schema version the model's opset selects, or if its schema is a
  function the runtime expands), and the highest opset and IR version the *pinned*
  release implements, from onnxruntime's published compatibility table.
* OpenVINO: `Core().read_model` (the ONNX frontend must convert every operator) and
  `Core().query_model` on the device the class names. Where OpenVINO is missing the
  answer is "not checked"; where the device (say NPU) is not present on this host, the
  query runs on CPU as a proxy and says so.
* TensorRT: the maintained parser table in `tensorrt_table` (TensorRT needs a GPU).

`onnxruntime_support`, `openvino_support` and `tensorrt_support` are pure;
`installed_onnxruntime_kernels` and `probe_openvino` are the I/O edges.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from edgefleet.analysis import tensorrt_table
from edgefleet.analysis.onnx_facts import DEFAULT_DOMAIN, ModelFacts
from edgefleet.spec.hardware import RuntimeSpec

Status = Literal["pass", "fail", "unchecked"]

# onnxruntime release -> (highest ai.onnx opset, highest ONNX IR version) it implements.
# From onnxruntime.ai/docs/reference/compatibility.html ("ONNX opset support").
ONNXRUNTIME_LIMITS: dict[str, tuple[int, int]] = {
    "1.6": (13, 7), "1.7": (13, 7), "1.8": (14, 7), "1.9": (15, 8), "1.10": (15, 8),
    "1.11": (16, 8), "1.12": (17, 8), "1.13": (17, 8), "1.14": (18, 8), "1.15": (19, 9),
    "1.16": (19, 9), "1.17": (20, 9), "1.18": (21, 10), "1.19": (21, 10), "1.20": (21, 10),
    "1.21": (22, 10),
}
CPU_PROVIDER = "CPUExecutionProvider"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Verdict(_Frozen):
    status: Status
    measured: str  # the model's side
    limit: str  # the runtime's side
    detail: str = ""  # why it fails, or why it was not checked


class RuntimeSupport(_Frozen):
    runtime: str
    version: str  # the version the class pins
    device: str
    checked_with: str  # what answered, e.g. "onnxruntime 1.32.0 kernels (CPUExecutionProvider)"
    operators: Verdict
    opset: Verdict
    unsupported_ops: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    proxy_for: str = ""  # the class's device, when another one (CPU) answered in its place


class KernelIndex(_Frozen):
    """The operator kernels an installed onnxruntime registers, per "domain:op"."""

    version: str
    provider: str
    ranges: dict[str, tuple[tuple[int, int], ...]]

    @property
    def max_opset(self) -> int:
        return max((a for key, rs in self.ranges.items() if key.startswith(DEFAULT_DOMAIN + ":")
                    for a, _ in rs), default=0)


class OpenVinoProbe(_Frozen):
    installed: str  # OpenVINO version, "" when not installed
    requested: str  # the class's device
    used: str = ""  # the device actually queried ("" when nothing was)
    unconverted: tuple[str, ...] = ()  # ONNX operators the frontend has no rule for
    unsupported: tuple[str, ...] = ()  # OpenVINO operations the device cannot run
    error: str = ""


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _ops_measured(facts: ModelFacts) -> str:
    return f"{len(facts.operators)} operator types"


# ---------------------------------------------------------------- onnxruntime


def installed_onnxruntime_kernels() -> KernelIndex | None:
    """The CPU kernels of the onnxruntime installed here (None if it is not)."""
    try:
        import onnxruntime
        from onnxruntime.capi import _pybind_state as C
    except ImportError:
        return None
    ranges: dict[str, list[tuple[int, int]]] = {}
    for k in C.get_all_opkernel_def():
        if k.provider != CPU_PROVIDER:
            continue
        key = f"{k.domain or DEFAULT_DOMAIN}:{k.op_name}"
        ranges.setdefault(key, []).append((int(k.version_range[0]), int(k.version_range[1])))
    return KernelIndex(version=onnxruntime.__version__, provider=CPU_PROVIDER,
                       ranges={k: tuple(sorted(set(v))) for k, v in sorted(ranges.items())})


def onnxruntime_support(facts: ModelFacts, runtime: RuntimeSpec, kernels: KernelIndex | None) -> RuntimeSupport:
    notes: list[str] = []
    if kernels is None:
        operators = Verdict(status="unchecked", measured=_ops_measured(facts), limit="onnxruntime kernels",
                            detail="onnxruntime is not installed here")
        checked_with = "nothing (onnxruntime not installed)"
        unsupported: list[str] = []
    else:
        checked_with = f"onnxruntime {kernels.version} kernels ({kernels.provider})"
        unsupported, problems = [], []
        for use in facts.operators:
            ranges = kernels.ranges.get(f"{use.domain}:{use.op_type}")
            wanted = use.since_version or facts.opsets.get(use.domain, 1)
            if ranges and any(a <= wanted <= b for a, b in ranges):
                continue
            if not ranges and (use.function or (use.domain == DEFAULT_DOMAIN and use.op_type == "Constant")):
                continue  # expanded into other operators / folded into an initializer
            unsupported.append(use.key)
            if ranges:
                spans = ", ".join(f"{a}" if a == b else f"{a}+" if b > 10**6 else f"{a}-{b}" for a, b in ranges)
                problems.append(f"{use.key} (opset {wanted}; kernels only for opsets {spans})")
            else:
                problems.append(f"{use.key} (no kernel)")
        operators = Verdict(
            status="fail" if unsupported else "pass", measured=_ops_measured(facts),
            limit=f"onnxruntime {kernels.version} {kernels.provider} kernels",
            detail=("onnxruntime has no kernel for " + ", ".join(problems)) if problems else "")
        if _minor(kernels.version) != _minor(runtime.version):
            notes.append(f"operators were checked against the kernels of onnxruntime {kernels.version} "
                         f"installed here; the class pins {runtime.version}")
    if runtime.device != CPU_PROVIDER:
        notes.append(f"{runtime.device} placement is not checked here; nodes it cannot take fall back to "
                     f"the CPU kernels, which were checked")
    return RuntimeSupport(runtime="onnxruntime", version=runtime.version, device=runtime.device,
                          checked_with=checked_with, operators=operators,
                          opset=_onnxruntime_opset(facts, runtime, kernels),
                          unsupported_ops=tuple(unsupported), notes=tuple(notes))


def _onnxruntime_opset(facts: ModelFacts, runtime: RuntimeSpec, kernels: KernelIndex | None) -> Verdict:
    measured = f"opset {facts.opset}, IR {facts.ir_version}"
    pinned = _minor(runtime.version)
    if pinned in ONNXRUNTIME_LIMITS:
        max_opset, max_ir = ONNXRUNTIME_LIMITS[pinned]
        source = f"onnxruntime {runtime.version}"
    elif kernels is not None and _minor(kernels.version) == pinned:
        max_opset, max_ir = kernels.max_opset, None
        source = f"onnxruntime {kernels.version} (installed)"
    else:
        return Verdict(status="unchecked", measured=measured, limit=f"onnxruntime {runtime.version}",
                       detail=f"onnxruntime {runtime.version} is not in edgefleet's opset table "
                              f"(known: {', '.join(ONNXRUNTIME_LIMITS)})")
    limit = f"{source}: opset <= {max_opset}" + (f", IR <= {max_ir}" if max_ir else "")
    problems = []
    if facts.opset is not None and facts.opset > max_opset:
        problems.append(f"the model uses ai.onnx opset {facts.opset}, {source} implements up to {max_opset}")
    if max_ir and facts.ir_version > max_ir:
        problems.append(f"the model is ONNX IR version {facts.ir_version}, {source} loads up to {max_ir}")
    return Verdict(status="fail" if problems else "pass", measured=measured, limit=limit,
                   detail="; ".join(problems))


# ------------------------------------------------------------------ OpenVINO


def probe_openvino(path: Path, device: str) -> OpenVinoProbe:
    """Convert the model with OpenVINO and ask the device which operations it runs."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        installed = version("openvino")
    except PackageNotFoundError:
        return OpenVinoProbe(installed="", requested=device)
    import openvino as ov

    core = ov.Core()
    available = {d.split(".")[0] for d in core.available_devices}
    used = device if device.split(".")[0] in available else "CPU"
    try:
        model = core.read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with the frontend's report
        unconverted = _unconverted_ops(str(exc))
        return OpenVinoProbe(installed=installed, requested=device, used=used, unconverted=unconverted,
                             error="" if unconverted else _first_line(str(exc)))
    try:
        supported = core.query_model(model, used)
    except Exception as exc:  # a plugin that fails to load must not take validate down
        return OpenVinoProbe(installed=installed, requested=device, used=used, error=_first_line(str(exc)))
    missing = sorted({op.get_type_name() for op in model.get_ordered_ops()
                      if op.get_friendly_name() not in supported})
    return OpenVinoProbe(installed=installed, requested=device, used=used, unsupported=tuple(missing))


def _unconverted_ops(message: str) -> tuple[str, ...]:
    # "-- No conversion rule found for operations: Det-17, MaxUnpool-11"
    found: set[str] = set()
    for line in message.splitlines():
        match = re.search(r"No conversion rule found for operations:\s*(.+)$", line)
        if match:
            found.update(re.sub(r"-\d+$", "", op.strip()) for op in match.group(1).split(",") if op.strip())
    return tuple(sorted(found))


def _first_line(message: str) -> str:
    lines = [ln.strip() for ln in message.splitlines() if ln.strip() and not ln.startswith("Exception from")]
    return (lines[-1] if lines else message.strip())[:300]


def openvino_support(facts: ModelFacts, runtime: RuntimeSpec, probe: OpenVinoProbe) -> RuntimeSupport:
    opset = Verdict(status="unchecked", measured=f"opset {facts.opset}", limit=f"OpenVINO {runtime.version}",
                    detail="no opset table for OpenVINO; the ONNX frontend's conversion covers the operators")
    if not probe.installed:
        return RuntimeSupport(
            runtime="openvino", version=runtime.version, device=runtime.device,
            checked_with="nothing (OpenVINO not installed)", opset=opset,
            operators=Verdict(status="unchecked", measured=_ops_measured(facts),
                              limit=f"OpenVINO {runtime.version} on {runtime.device}",
                              detail="OpenVINO is not installed here (pip install 'edgefleet[openvino]'); "
                                     "operators not checked"))
    notes = []
    if probe.used != probe.requested:
        notes.append(f"device {probe.requested} is not present on this host; operators were checked on "
                     f"{probe.used} as a proxy")
    if _minor(probe.installed) != _minor(runtime.version):
        notes.append(f"checked with OpenVINO {probe.installed} installed here; the class pins {runtime.version}")
    limit = f"OpenVINO {probe.installed} on {probe.used}" + (f" (proxy for {probe.requested})"
                                                              if probe.used != probe.requested else "")
    problems = []
    if probe.unconverted:
        problems.append("the ONNX frontend has no conversion rule for " + ", ".join(probe.unconverted))
    if probe.unsupported:
        problems.append(f"{probe.used} cannot run OpenVINO operations " + ", ".join(probe.unsupported))
    if probe.error:
        problems.append(f"OpenVINO failed: {probe.error}")
    operators = Verdict(status="fail" if problems else "pass", measured=_ops_measured(facts), limit=limit,
                        detail="; ".join(problems))
    return RuntimeSupport(runtime="openvino", version=runtime.version, device=runtime.device,
                          checked_with=limit, operators=operators, opset=opset,
                          unsupported_ops=probe.unconverted + probe.unsupported, notes=tuple(notes),
                          proxy_for=probe.requested if probe.used != probe.requested else "")


# ------------------------------------------------------------------ TensorRT


def tensorrt_support(facts: ModelFacts, runtime: RuntimeSpec) -> RuntimeSupport:
    release = tensorrt_table.release_for(runtime.version)
    if release is None:
        known = ", ".join(tensorrt_table.RELEASES)
        unchecked = f"TensorRT {runtime.version} is not in edgefleet's TensorRT table (known: {known})"
        return RuntimeSupport(
            runtime="tensorrt", version=runtime.version, device=runtime.device, checked_with="nothing",
            operators=Verdict(status="unchecked", measured=_ops_measured(facts),
                              limit=f"TensorRT {runtime.version}", detail=unchecked),
            opset=Verdict(status="unchecked", measured=f"opset {facts.opset}", limit=f"TensorRT {runtime.version}",
                          detail=unchecked))
    table = f"TensorRT {release.version} parser table"
    unsupported, problems = [], []
    for use in facts.operators:
        if use.domain == DEFAULT_DOMAIN and use.op_type in release.supported:
            continue
        unsupported.append(use.key)
        if use.domain != DEFAULT_DOMAIN:
            problems.append(f"{use.key} (custom domain: needs a TensorRT plugin)")
        elif use.op_type in release.unsupported:
            problems.append(f"{use.key} (not supported)")
        else:
            problems.append(f"{use.key} (not in the table)")
    operators = Verdict(status="fail" if unsupported else "pass", measured=_ops_measured(facts), limit=table,
                        detail=("TensorRT's ONNX parser cannot import " + ", ".join(problems)) if problems else "")
    opset_value = facts.opset
    ok = opset_value is not None and release.min_opset <= opset_value <= release.max_opset
    opset = Verdict(status="pass" if ok else "fail", measured=f"opset {opset_value}",
                    limit=f"TensorRT {release.version}: opset {release.min_opset}-{release.max_opset}",
                    detail="" if ok else f"the model uses ai.onnx opset {opset_value}; TensorRT {release.version} "
                                         f"parses opsets {release.min_opset} to {release.max_opset}")
    notes = ["TensorRT is not run here (it needs the class's GPU); checked against edgefleet's table of "
             "TensorRT's ONNX parser"]
    if release.version != _minor(runtime.version):
        notes.append(f"TensorRT {runtime.version} checked against the {release.version} table "
                     f"(the newest row not above it)")
    return RuntimeSupport(runtime="tensorrt", version=runtime.version, device=runtime.device,
                          checked_with=table, operators=operators, opset=opset,
                          unsupported_ops=tuple(unsupported), notes=tuple(notes))
