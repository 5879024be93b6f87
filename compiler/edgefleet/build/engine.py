"""The optimization and gating engine: one source model in, one gated artifact (or none) out.

`build_artifact(request, workdir)` checks the whole request first (source model, data,
every recipe of the chain) and raises `BuildError` for a bad input before anything is
built. Then it measures the FP32 reference once with the class runtime's real runtime and
tries the recipes in order: optimize, then gate (size, accuracy against FP32 on the
evaluation data, latency and peak memory measured on this host). The first recipe that
passes every gate is chosen; each rejected one is kept with its numbers and the reason.
If none passes, the outcome has no artifact and the attempts say why; that is a result,
not an exception.

Outputs are bytes returned in memory: all intermediate files live in a private directory
under `workdir` that is removed on success and on error alike, so nothing is left behind.
The artifact's bytes depend only on the request and the toolchain versions
(`toolchain_versions`); measured numbers (latency, memory) vary run to run and are
reported in `metrics`, never written into the artifact.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from edgefleet import __version__
from edgefleet.build import optimize_ort
from edgefleet.build.data import check_fits, check_inputs, check_labels, chunks
from edgefleet.build.errors import BuildError
from edgefleet.build.gates import (GateResult, Measurement, RuntimeRefused, accuracy, accuracy_gate, latency_gate,
                                   measure, memory_gate, rejection_reason, size_gate)
from edgefleet.build.onnx_io import (InputInfo, canonical_bytes, default_opset, input_info, lift_constants, load_source,
                                     node_names)
from edgefleet.build.prune import PruneStats, compressed_size, magnitude_prune
from edgefleet.rules.gates import gate_problems
from edgefleet.rules.recipes import recipe_problems
from edgefleet.spec import Recipe
from edgefleet.spec.hardware import RuntimeSpec
from edgefleet.spec.model import AccuracyBudget

__all__ = ["Attempt", "BuildError", "BuildOutcome", "BuildRequest", "GateResult", "ProbeSpec",
           "build_artifact", "check_recipe", "check_request", "toolchain_versions"]

# Bumped whenever this engine changes how bytes are made: part of every content key.
ENGINE_FORMAT = "1"
# Share of the expected output's magnitude a device's probe may deviate by, per precision:
# another CPU or runtime build rounds differently, most of all in requantized int8 graphs.
PROBE_TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2, "int8": 5e-2}


@dataclass(frozen=True, eq=False)
class BuildRequest:
    model: str
    version: str
    variant: str
    hardware_class: str
    source_path: Path  # the FP32 ONNX
    runtime: RuntimeSpec
    class_precisions: tuple[str, ...]
    max_artifact_bytes: int
    latency_budget_ms: float
    batch_size: int
    recipes: tuple[Recipe, ...]  # primary first, then fallbacks
    accuracy: AccuracyBudget | None
    calibration: np.ndarray | None  # float32 inputs
    evaluation: np.ndarray | None
    labels: np.ndarray | None
    # Optional, with defaults that keep a minimal request working:
    cpu_arch: str = "x86_64"  # the class's CPU: decides reduce_range when a recipe leaves it unset
    compute_capability: str | None = None  # the class GPU's (TensorRT build spec, engine)
    ram_budget_bytes: int | None = None  # model_ram_budget_mb: gates peak memory when set
    requires_accuracy_gate: bool = True
    warmup_runs: int = 5
    latency_runs: int = 30
    source_shown: str | None = None  # how to name the source in messages (repository path)


@dataclass(frozen=True)
class Attempt:
    recipe: Recipe
    passed: bool
    gates: tuple[GateResult, ...]
    reason: str  # why it was rejected ("" when it passed)
    metrics: dict = field(default_factory=dict)  # the attempt's numbers (see BuildOutcome.metrics)


@dataclass(frozen=True)
class ProbeSpec:
    """The device's health probe: run the golden input, compare, time it."""

    input_npy: bytes  # the golden input (first evaluation batch), .npy
    input_sha256: str
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    output_shape: tuple[int, ...]
    expected_output: tuple[float, ...]  # the artifact's first output on the golden input, flattened
    tolerance: float  # largest absolute difference allowed per element
    latency_budget_ms: float
    compare: str = "max_abs_error"


@dataclass(frozen=True, eq=False)
class BuildOutcome:
    request: BuildRequest
    artifact: bytes | None  # None: no recipe passed its gates
    artifact_name: str  # "model.onnx" or "model.ov.tar"
    chosen: Recipe | None
    attempts: tuple[Attempt, ...]
    metrics: dict  # the chosen attempt's numbers
    probe: ProbeSpec | None
    extra_files: dict[str, bytes]  # e.g. "tensorrt-build-spec.json"
    engine: bytes | None = None  # a TensorRT engine, only when built on a matching GPU here (not content-addressed)


# -- toolchain ---------------------------------------------------------------------------


def toolchain_versions(runtime: str | RuntimeSpec) -> dict[str, str]:
    """Versions of everything that decides an artifact's bytes (and its gate numbers)."""
    name = getattr(runtime, "name", runtime)
    packages = ("numpy", "onnx", "openvino", "nncf") if name == "openvino" else ("numpy", "onnx", "onnxruntime")
    versions = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["edgefleet"] = __version__
    versions["edgefleet-build-engine"] = ENGINE_FORMAT
    return versions


def artifact_name(runtime: str) -> str:
    return "model.ov.tar" if runtime == "openvino" else "model.onnx"


# -- checking the request (pure) ---------------------------------------------------------------


# Where each kind of recipe problem (`rules.recipes`) is reported by the build.
_RECIPE_CODES = {"precision": ("E421", "recipe"), "runtime": ("E420", "recipe"),
                 "calibration": ("E412", "calibration"), "node": ("E422", "recipe")}


def check_recipe(recipe: Recipe, runtime: str, precisions: tuple[str, ...], has_calibration: bool,
                 nodes: set[str]) -> None:
    """A recipe the class's runtime cannot run, or that lacks what it needs, is a BuildError.

    The rule is `rules.recipes.recipe_problems` (validation reports the same problems as E308).
    """
    problems = recipe_problems(recipe, runtime, precisions, has_calibration=has_calibration, nodes=nodes)
    if problems:
        first = problems[0]
        code, subject = _RECIPE_CODES[first.kind]
        raise BuildError(code, f"recipe '{recipe.name}' {first.message}", first.hint, subject=subject, recipe=recipe)


def _check_request(request: BuildRequest, source: onnx.ModelProto, info: InputInfo) -> None:
    runtime = request.runtime.name
    if not request.recipes:
        raise BuildError("E420", "no recipe to build with", "declare recipes on the class or the model",
                         subject="recipe")
    if request.batch_size < 1:
        raise BuildError("E411", f"batch size {request.batch_size} is not positive", "set batch_size >= 1")
    if info.fixed_batch is not None and info.fixed_batch != request.batch_size:
        raise BuildError("E411", f"the model input '{info.name}' takes batches of {info.fixed_batch}, but the "
                                 f"class feeds batches of {request.batch_size}",
                         "export the model with a dynamic (or matching) batch dimension")
    nodes = node_names(source)
    for recipe in request.recipes:
        check_recipe(recipe, runtime, tuple(request.class_precisions), request.calibration is not None, nodes)
    if request.calibration is not None:
        check_inputs(request.calibration, "calibration", "the calibration data")
        check_fits(request.calibration, info.shape, "calibration", info.name)
    if request.evaluation is not None:
        check_inputs(request.evaluation, "evaluation", "the evaluation data")
        check_fits(request.evaluation, info.shape, "evaluation", info.name)
        if request.labels is not None:
            check_labels(request.labels, len(request.evaluation), "the evaluation data")
    # The gate rule is `rules.gates` (validation's E310, resolution's E407).
    for problem in gate_problems(request.requires_accuracy_gate, request.accuracy, request.evaluation is not None,
                                 request.labels is not None):
        code, subject = ("E412", "evaluation") if problem.missing == "evaluation" else ("E415", "accuracy")
        raise BuildError(code, problem.message, problem.hint, subject=subject)


# -- building --------------------------------------------------------------------------


def check_request(request: BuildRequest) -> tuple[onnx.ModelProto, InputInfo]:
    """Everything `build_artifact` refuses before it optimizes anything (BuildError), nothing built."""
    shown = request.source_shown or request.source_path.name
    source = load_source(request.source_path, shown)
    info = input_info(source, shown)
    _check_request(request, source, info)
    return source, info


def build_artifact(request: BuildRequest, workdir: Path) -> BuildOutcome:
    source, info = check_request(request)
    if request.runtime.name == "openvino":
        from edgefleet.build.optimize_openvino import import_nncf, import_openvino

        import_openvino()
        if any(r.precision == "int8" for r in request.recipes):
            import_nncf()
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # the quantizer's C++ warnings are noise on a CLI
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgefleet-engine-", dir=workdir) as tmp:
        return _Build(request, source, info, Path(tmp)).run()


@dataclass
class _Made:
    artifact: bytes
    gate_model: Path  # what the gating runtime loads
    notes: list[str]
    extra_files: dict[str, bytes] = field(default_factory=dict)
    ort_level: str = "extended"  # the session level devices run (templates/runtime/onnxruntime.json.j2)
    prune: PruneStats | None = None
    engine: bytes | None = None
    info: dict = field(default_factory=dict)  # format facts a device runtime must support


class _Build:
    def __init__(self, request: BuildRequest, source: onnx.ModelProto, info: InputInfo, tmp: Path):
        self.request = request
        self.source = source
        self.info = info
        self.tmp = tmp
        self.runtime = request.runtime.name
        self.gate_runtime = "openvino" if self.runtime == "openvino" else "onnxruntime"
        self.eval_chunk = info.fixed_batch or request.batch_size
        self.calib_chunk = info.fixed_batch or 1
        self.golden = self._golden()
        self._references: dict[str, Measurement] = {}
        self._prepared: dict[str, onnx.ModelProto] = {}
        self.source_bytes = request.source_path.read_bytes()
        self.source_packed = compressed_size(self.source_bytes)

    # -- data --
    def _golden(self) -> np.ndarray:
        """The first batch the device would feed: evaluation data first, else calibration."""
        data = self.request.evaluation if self.request.evaluation is not None else self.request.calibration
        if data is None:
            if any(d is None for d in self.info.shape[1:]):
                raise BuildError("E412", "no evaluation or calibration data to measure the model with, and its "
                                         "input shape is not fixed",
                                 "add spec.data.evaluation (an npz of real inputs, key 'input')", subject="evaluation")
            return np.zeros((self.request.batch_size, *self.info.shape[1:]), np.float32)
        batch, _ = next(chunks(data, self.request.batch_size))
        return np.ascontiguousarray(batch)

    # -- runtime --
    def _measure(self, model: Path, ort_level: str) -> Measurement:
        return measure(self.gate_runtime, model, evaluation=self.request.evaluation, golden=self.golden,
                       chunk=self.eval_chunk, workdir=self.tmp / "measure", warmup=self.request.warmup_runs,
                       runs=self.request.latency_runs, ort_level=ort_level,
                       ov_config={"INFERENCE_PRECISION_HINT": "f32"} if self.gate_runtime == "openvino" else None)

    def reference(self, ort_level: str) -> Measurement:
        key = ort_level if self.gate_runtime == "onnxruntime" else "ov"
        if key not in self._references:
            try:
                self._references[key] = self._measure(self.request.source_path.resolve(), ort_level)
            except RuntimeRefused as exc:
                raise BuildError("E410", f"the FP32 source model does not run: {exc}",
                                 "check the source model with the class's runtime; re-export it") from None
        return self._references[key]

    def prepared(self, level: str) -> onnx.ModelProto:
        level = "none" if level == "none" else "basic"
        if level not in self._prepared:
            work = self.tmp / f"prepare-{level}"
            work.mkdir()
            self._prepared[level] = optimize_ort.prepare(self.source, level, work)
        return self._prepared[level]

    # -- making artifacts --
    def make(self, recipe: Recipe, work: Path) -> _Made:
        if self.runtime == "openvino":
            return self._make_openvino(recipe, work)
        level = recipe.graph_optimization
        model = self.prepared(level)
        model, stats = self._prune(model, recipe)
        target = "tensorrt" if self.runtime == "tensorrt" else "cpu"
        graph, notes = optimize_ort.optimize(
            model, recipe, target=target, cpu_arch=self.request.cpu_arch, input_name=self.info.name,
            calibration=self.request.calibration, chunk=self.calib_chunk, workdir=work)
        data = canonical_bytes(graph)
        path = work / "artifact.onnx"
        path.write_bytes(data)
        notes.append(f"saved graph optimization: {'none' if level == 'none' else 'basic'} (portable); the "
                     f"session applies the extended level at load time, on the device as in the gate")
        made = _Made(data, path, notes, prune=stats,
                     info={"onnx_opset": default_opset(graph), "onnx_ir_version": int(graph.ir_version)})
        if self.runtime == "tensorrt":
            self._tensorrt(made, recipe)
        elif self.request.runtime.device != "CPUExecutionProvider":
            made.notes.append(f"gated on onnxruntime CPUExecutionProvider on this host; the class runs "
                              f"{self.request.runtime.device}")
        return made

    def _prune(self, model: onnx.ModelProto, recipe: Recipe) -> tuple[onnx.ModelProto, PruneStats | None]:
        if not recipe.sparsity:
            return model, None
        return magnitude_prune(model, recipe.sparsity, frozenset(recipe.exclude_nodes))

    def _tensorrt(self, made: _Made, recipe: Recipe) -> None:
        from edgefleet.build import optimize_tensorrt as trt

        spec = trt.build_spec(made.artifact, precision=recipe.precision,
                              tensorrt_version=self.request.runtime.version,
                              compute_capability=self.request.compute_capability, input_name=self.info.name,
                              shape=tuple(int(d) for d in self.golden.shape),
                              workspace=trt.workspace_mb(self.request.ram_budget_bytes))
        made.extra_files[trt.SPEC_FILE] = spec.to_json()
        installed = trt.tensorrt_version()
        decision = trt.decide_engine(spec, installed, trt.local_gpu_capabilities() if installed else ())
        made.notes.append("TensorRT-ready ONNX gated on onnxruntime CPUExecutionProvider on this host; "
                          "the device's TensorRT builds its engine from this same graph")
        made.notes.append(decision.reason)
        if decision.build_here:
            made.engine = trt.build_engine(made.artifact, spec)

    def _make_openvino(self, recipe: Recipe, work: Path) -> _Made:
        from edgefleet.build.optimize_openvino import build_ir, ir_tar

        model, stats = self.source, None
        if recipe.sparsity:
            model, stats = self._prune(lift_constants(self.source), recipe)
        xml, notes = build_ir(model, recipe, self.request.calibration, self.calib_chunk, work)
        notes.append(f"gated on OpenVINO CPU at f32 inference precision on this host; the class runs on "
                     f"{self.request.runtime.device}")
        return _Made(ir_tar(xml), xml, notes, prune=stats)

    # -- gating --
    def attempt(self, index: int, recipe: Recipe) -> tuple[Attempt, _Made | None, Measurement | None]:
        work = self.tmp / f"attempt-{index}"
        work.mkdir()
        try:
            made = self.make(recipe, work)
        except BuildError:
            raise
        except Exception as exc:  # the optimizer's own failure on this recipe: rejected, with its words
            why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            gate = GateResult("optimize", 0.0, 1.0, False, f"the {self.runtime} toolchain could not make it: {why}")
            return Attempt(recipe, False, (gate,), f"optimization failed: {why}"), None, None
        gates = [size_gate(len(made.artifact), self.request.max_artifact_bytes)]
        reference = self.reference(made.ort_level)
        try:
            measured = self._measure(made.gate_model, made.ort_level)
        except RuntimeRefused as exc:
            gates.append(GateResult("runs", 0.0, 1.0, False, str(exc)))
            attempt = Attempt(recipe, False, tuple(gates), rejection_reason(tuple(gates)),
                              self._metrics(recipe, made, None, reference))
            return attempt, made, None
        budget = self.request.accuracy
        if budget is not None:
            gates.append(accuracy_gate(budget, reference.outputs, measured.outputs, self.request.labels))
        ratio = measured.median_ms / reference.median_ms if reference.median_ms > 0 else float("inf")
        if recipe.max_latency_ratio is not None:
            gates.append(latency_gate(ratio, recipe.max_latency_ratio))
        if self.request.ram_budget_bytes is not None:
            gates.append(memory_gate(measured.peak_bytes, self.request.ram_budget_bytes))
        passed = all(g.passed for g in gates)
        attempt = Attempt(recipe, passed, tuple(gates), "" if passed else rejection_reason(tuple(gates)),
                          self._metrics(recipe, made, measured, reference))
        return attempt, made, measured

    def _metrics(self, recipe: Recipe, made: _Made, measured: Measurement | None, reference: Measurement) -> dict:
        source_bytes = len(self.source_bytes)
        size = len(made.artifact)
        packed = compressed_size(made.artifact)
        metrics: dict = {
            "precision": recipe.precision,
            "source_bytes": source_bytes,
            "artifact_bytes": size,
            "size_ratio": round(size / source_bytes, 4),
            "compressed_bytes": packed,
            "compressed_ratio": round(packed / self.source_packed, 4),
            **made.info,
            "notes": list(made.notes),
        }
        if made.prune is not None:
            metrics["sparsity"] = {"target": made.prune.target, "achieved": made.prune.sparsity,
                                   "weights": made.prune.weights, "zeros": made.prune.zeros,
                                   "tensors": made.prune.tensors}
        if measured is None:
            return metrics
        metrics.update({
            "gate_runtime": measured.runtime,
            "latency_batch": int(self.golden.shape[0]),
            "latency_runs": len(measured.latency_ms),
            "latency_ms": {"median": round(measured.median_ms, 4), "p95": round(measured.p95_ms, 4)},
            "reference_latency_ms": {"median": round(reference.median_ms, 4), "p95": round(reference.p95_ms, 4)},
            "latency_ratio": {"median": round(measured.median_ms / reference.median_ms, 4),
                              "p95": round(measured.p95_ms / reference.p95_ms, 4)},
            "peak_memory_bytes": measured.peak_bytes,
            "reference_peak_memory_bytes": reference.peak_bytes,
        })
        budget = self.request.accuracy
        if budget is not None and measured.outputs is not None:
            metrics["accuracy"] = {
                "metric": budget.metric, "threshold": budget.threshold,
                "value": round(accuracy(budget.metric, reference.outputs, measured.outputs, self.request.labels,
                                        budget.binarize_at), 6),
                "samples": int(len(measured.outputs))}
        labels = self.request.labels
        if labels is not None and measured.outputs is not None and measured.outputs.ndim > 1:
            metrics["top1_accuracy"] = round(accuracy("top1_accuracy", reference.outputs, measured.outputs, labels), 6)
            metrics["reference_top1_accuracy"] = round(
                accuracy("top1_accuracy", reference.outputs, reference.outputs, labels), 6)
        return metrics

    # -- the whole chain --
    def run(self) -> BuildOutcome:
        attempts: list[Attempt] = []
        for index, recipe in enumerate(self.request.recipes):
            attempt, made, measured = self.attempt(index, recipe)
            attempts.append(attempt)
            if attempt.passed:
                assert made is not None and measured is not None
                return BuildOutcome(self.request, made.artifact, artifact_name(self.runtime), recipe,
                                    tuple(attempts), attempt.metrics, self._probe(recipe, measured),
                                    dict(made.extra_files), made.engine)
        return BuildOutcome(self.request, None, artifact_name(self.runtime), None, tuple(attempts), {}, None, {})

    def _probe(self, recipe: Recipe, measured: Measurement) -> ProbeSpec:
        buffer = io.BytesIO()
        np.save(buffer, self.golden, allow_pickle=False)
        golden = buffer.getvalue()
        expected = np.asarray(measured.golden_outputs[0], dtype=np.float32)
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
        tolerance = max(PROBE_TOLERANCE[recipe.precision] * (scale or 1.0), 1e-5)
        return ProbeSpec(
            input_npy=golden,
            input_sha256=hashlib.sha256(golden).hexdigest(),
            input_name=self.info.name,
            input_shape=tuple(int(d) for d in self.golden.shape),
            output_name=self.info.output_names[0],
            output_shape=tuple(int(d) for d in expected.shape),
            expected_output=tuple(float(v) for v in expected.reshape(-1)),
            tolerance=float(f"{tolerance:.6g}"),
            latency_budget_ms=float(self.request.latency_budget_ms),
        )
