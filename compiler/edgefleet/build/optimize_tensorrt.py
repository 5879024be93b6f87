"""TensorRT recipes: a TensorRT-ready ONNX graph plus the spec to build its engine.

TensorRT 10+ builds strongly typed networks that take their precision from the graph, so
the shipped artifact is ONNX: symmetric Q/DQ INT8 (see `optimize_ort`, target "tensorrt")
or an FP16 graph. An engine is tied to the GPU architecture and the TensorRT version, so
it is built only where both match: on the device at staging time, or on a builder with the
same GPU. This module writes the build spec (TensorRT version, workspace, input shapes,
timing-cache key by compute capability) and, when `tensorrt` is importable AND this host's
GPU has the class's compute capability, builds the engine here too; otherwise it records
"engine deferred to device". `tensorrt` is an optional extra, imported lazily and only
to build an engine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass

from edgefleet.build.errors import BuildError

SPEC_FILE = "tensorrt-build-spec.json"
DEFAULT_WORKSPACE_MB = 1024


@dataclass(frozen=True)
class TensorRTBuildSpec:
    tensorrt_version: str  # the class runtime's TensorRT version
    compute_capability: str | None  # the class GPU's CUDA compute capability
    precision: str  # the graph's precision: int8 (explicit Q/DQ), fp16 or fp32
    strongly_typed: bool  # precision comes from the graph, not from builder flags
    workspace_mb: int
    input_name: str
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]
    onnx_sha256: str
    timing_cache_key: str  # timing caches are shared per (TensorRT version, GPU architecture)
    engine_key: str  # the engine for this graph on this GPU architecture and TensorRT version

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True, separators=(",", ":")) + "\n").encode()


def build_spec(onnx_bytes: bytes, *, precision: str, tensorrt_version: str, compute_capability: str | None,
               input_name: str, shape: tuple[int, ...], workspace: int) -> TensorRTBuildSpec:
    sm = "sm" + compute_capability.replace(".", "") if compute_capability else "sm-unknown"
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    return TensorRTBuildSpec(
        tensorrt_version=tensorrt_version,
        compute_capability=compute_capability,
        precision=precision,
        strongly_typed=True,
        workspace_mb=int(workspace),
        input_name=input_name,
        min_shape=shape, opt_shape=shape, max_shape=shape,  # the device feeds one fixed shape
        onnx_sha256=digest,
        timing_cache_key=f"trt{tensorrt_version}-{sm}",
        engine_key=hashlib.sha256(f"{digest}:trt{tensorrt_version}:{sm}".encode()).hexdigest(),
    )


def workspace_mb(ram_budget_bytes: int | None) -> int:
    """Half the class's model RAM budget, at most 4 GiB (as the device's runtime config says)."""
    if not ram_budget_bytes:
        return DEFAULT_WORKSPACE_MB
    return max(1, min((ram_budget_bytes >> 20) // 2, 4096))


@dataclass(frozen=True)
class EngineDecision:
    build_here: bool
    reason: str


def local_gpu_capabilities() -> tuple[str, ...]:
    """Compute capabilities of this host's NVIDIA GPUs (none without nvidia-smi)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        out = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in out.splitlines() if line.strip())


def tensorrt_version() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return None
    import tensorrt as trt

    return str(trt.__version__)


def decide_engine(spec: TensorRTBuildSpec, installed: str | None, gpus: tuple[str, ...]) -> EngineDecision:
    """Build the engine here only with the class's GPU architecture and TensorRT version. Pure."""
    if installed is None:
        return EngineDecision(False, "engine deferred to device: tensorrt is not installed on this host")
    if spec.compute_capability is None:
        return EngineDecision(False, "engine deferred to device: the class declares no compute_capability")
    if spec.compute_capability not in gpus:
        seen = ", ".join(gpus) or "no NVIDIA GPU"
        return EngineDecision(False, f"engine deferred to device: this host has {seen}, the class needs "
                                     f"compute capability {spec.compute_capability}")
    if not _same_minor(installed, spec.tensorrt_version):
        return EngineDecision(False, f"engine deferred to device: tensorrt {installed} here, the class "
                                     f"runs {spec.tensorrt_version}")
    return EngineDecision(True, f"engine built here: tensorrt {installed} on a GPU of compute capability "
                                f"{spec.compute_capability}")


def _same_minor(installed: str, wanted: str) -> bool:
    return installed.split(".")[:2] == wanted.split(".")[:2]


def build_engine(onnx_bytes: bytes, spec: TensorRTBuildSpec) -> bytes:
    """Serialize a TensorRT engine (the real path; needs tensorrt and a matching GPU)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError("E420", f"TensorRT cannot parse the graph: {errors}",
                         "use a recipe TensorRT supports (symmetric int8 or fp16)", subject="recipe")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mb << 20)
    profile = builder.create_optimization_profile()
    profile.set_shape(spec.input_name, spec.min_shape, spec.opt_shape, spec.max_shape)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError("E420", "TensorRT could not build an engine for the graph",
                         "see the TensorRT log above; try the fp16 recipe", subject="recipe")
    return bytes(serialized)
