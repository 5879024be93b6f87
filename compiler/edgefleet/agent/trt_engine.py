"""The TensorRT engine of a TensorRT class's slot: built at staging, cached beside the model.

A TensorRT class ships ONNX (symmetric Q/DQ INT8 or FP16, `build/optimize_tensorrt.py`):
an engine is tied to the GPU and the TensorRT version, so the device builds it from the
staged ONNX with the class's runtime config (`runtime_config.engine`: precision from the
graph, int8/fp16, workspace) and the shipped `tensorrt-build-spec.json` (input name and
shapes). It lives in the slot, so a switch is instant and a reboot does not rebuild:

    slots/<x>/model.engine         the serialized engine (write-temp -> fsync -> rename)
    slots/<x>/model.engine.json    its record, written after the engine: key, sha256, size

The cache key is sha256(artifact digest, TensorRT version, GPU name). An engine whose
record names another key (TensorRT upgraded, another GPU) or whose bytes do not match the
record is refused, never deserialized, and rebuilt.

`tensorrt` (and `cuda-python` for device memory) are the optional `tensorrt` extra,
imported only here and only for a TensorRT class. Without them (or without an NVIDIA GPU)
`runtime()` raises `TensorRTUnavailable` (E612), which `runner.load_runner` raises as
`AcceleratorUnavailable`, so the class's `on_accelerator_failure` policy applies.
`stage_engine` (the stage step) builds the engine; a build TensorRT refuses is E608 there
(the update fails, the old model keeps serving). `load_engine` (`runner.load_runner`)
reuses the cached engine and rebuilds a missing or stale one; a rebuild that fails there is
an accelerator failure (the policy again), since that slot already passed its probe here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgefleet.agent.durable import write_atomic, write_json
from edgefleet.agent.errors import AgentError
from edgefleet.core.fsutil import sha256_file

ENGINE = "model.engine"
ENGINE_RECORD = "model.engine.json"
SPEC_FILE = "tensorrt-build-spec.json"  # = build.optimize_tensorrt.SPEC_FILE (shipped with the artifact)
RECORD_FORMAT = "edgefleet/tensorrt-engine/v1"
DEFAULT_WORKSPACE_MB = 1024


class TensorRTUnavailable(AgentError):
    """No TensorRT, CUDA or GPU here, or an engine that cannot be had at load time (E612).

    `runner.load_runner` raises it as its AcceleratorUnavailable (this module cannot import
    runner, which imports it)."""

    def __init__(self, message: str):
        super().__init__("E612", message, "the class's on_accelerator_failure policy applies",
                         reason="AcceleratorUnavailable")


def is_tensorrt(meta: dict) -> bool:
    return (meta.get("runtime") or {}).get("name") == "tensorrt"


# -- the runtime: tensorrt + CUDA, or TensorRTUnavailable ----------------------------------------

@dataclass(frozen=True)
class Runtime:
    trt: Any                 # the tensorrt module
    cudart: Any              # cuda-python's runtime API
    version: str             # tensorrt.__version__
    gpu: str                 # the GPU's name, as CUDA reports it


def runtime() -> Runtime:
    """tensorrt, CUDA and the GPU of this device, or TensorRTUnavailable saying which is missing."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError:
        raise TensorRTUnavailable("TensorRT is not installed (pip install 'edgefleet[tensorrt]' on a device "
                                     "with an NVIDIA GPU)") from None
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]  # older cuda-python
        except ImportError:
            raise TensorRTUnavailable("cuda-python is not installed (pip install 'edgefleet[tensorrt]')") from None
    try:
        count = _cuda(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")[0]
        if not count:
            raise RuntimeError("no CUDA device")
        props = _cuda(cudart, cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")[0]
    except Exception as exc:  # noqa: BLE001 - any CUDA failure means no usable GPU
        raise TensorRTUnavailable(f"no usable NVIDIA GPU for TensorRT: {exc}") from None
    name = props.name
    name = (name.split(b"\0", 1)[0].decode(errors="replace") if isinstance(name, bytes) else str(name)).strip()
    return Runtime(trt, cudart, str(trt.__version__), name or "unknown GPU")


def _cuda(cudart, result, what: str) -> tuple:
    """cuda-python returns (error, *values); raise on an error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(getattr(err, "value", err)) != 0:
        raise RuntimeError(f"{what} failed: {err}")
    return tuple(values)


# -- key, settings, cache --------------------------------------------------------------------------

def engine_key(artifact_digest: str, tensorrt_version: str, gpu: str) -> str:
    return hashlib.sha256(f"{artifact_digest}\0tensorrt {tensorrt_version}\0{gpu}".encode()).hexdigest()


@dataclass(frozen=True)
class EngineSettings:
    strongly_typed: bool     # precision from the graph (Q/DQ INT8, FP16 tensors): no precision flags
    int8: bool               # weakly typed only: BuilderFlag.INT8 (explicit Q/DQ quantization)
    fp16: bool               # weakly typed only: BuilderFlag.FP16 for the layers Q/DQ leaves in float
    workspace_bytes: int
    input_name: str | None
    min_shape: tuple[int, ...] | None
    opt_shape: tuple[int, ...] | None
    max_shape: tuple[int, ...] | None


def settings(slot_path: Path, meta: dict) -> EngineSettings:
    """The build settings: the class's runtime config, the shipped build spec for shapes."""
    engine = (meta.get("runtime_config") or {}).get("engine") or {}
    spec: dict = {}
    if SPEC_FILE in (meta.get("files") or {}):
        try:
            spec = json.loads((slot_path / SPEC_FILE).read_bytes())  # its digest was checked with the slot
        except (OSError, ValueError):
            spec = {}
    precision = str(meta.get("runtime_config", {}).get("precision") or spec.get("precision") or "fp32")
    from_graph = bool(engine.get("precision_from_graph", spec.get("strongly_typed", True)))
    workspace_mb = int(engine.get("workspace_mb") or spec.get("workspace_mb") or DEFAULT_WORKSPACE_MB)

    def shape(name: str) -> tuple[int, ...] | None:
        value = spec.get(name)
        return tuple(int(d) for d in value) if isinstance(value, list) else None

    return EngineSettings(strongly_typed=from_graph, int8=bool(engine.get("int8", precision == "int8")),
                          fp16=bool(engine.get("fp16", precision in ("fp16", "int8"))),
                          workspace_bytes=workspace_mb << 20, input_name=spec.get("input_name"),
                          min_shape=shape("min_shape"), opt_shape=shape("opt_shape"), max_shape=shape("max_shape"))


def cached_engine(slot_path: Path, key: str) -> Path | None:
    """The slot's engine when its record names `key` and its bytes match the record; else None."""
    engine, record = slot_path / ENGINE, slot_path / ENGINE_RECORD
    try:
        value = json.loads(record.read_bytes())
        if value.get("format") != RECORD_FORMAT or value.get("key") != key:
            return None  # another artifact, TensorRT version or GPU: refused
        if engine.stat().st_size != value.get("size") or sha256_file(engine) != value.get("sha256"):
            return None  # torn or corrupted: never handed to the deserializer
    except (OSError, ValueError, AttributeError):
        return None
    return engine


class EngineBuildFailed(AgentError):
    def __init__(self, message: str):
        super().__init__("E608", message, "TensorRT on this device cannot build an engine of the staged graph; "
                         "the current model keeps serving (use a recipe TensorRT supports: symmetric int8 or fp16)",
                         reason="EngineBuildFailed")


def build_engine(rt: Runtime, onnx: bytes, s: EngineSettings) -> bytes:
    """Serialize an engine of `onnx` with the class's settings (the real TensorRT builder)."""
    trt = rt.trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if s.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no detail"
        raise EngineBuildFailed(f"TensorRT {rt.version} cannot parse the staged ONNX: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, s.workspace_bytes)
    if not s.strongly_typed:  # a strongly typed network refuses precision flags: the graph decides
        if s.int8:
            config.set_flag(trt.BuilderFlag.INT8)
        if s.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
    dynamic = [network.get_input(i) for i in range(network.num_inputs)
               if any(int(d) < 0 for d in network.get_input(i).shape)]
    if dynamic:
        if not (s.input_name and s.min_shape and s.opt_shape and s.max_shape):
            raise EngineBuildFailed("the staged ONNX has a dynamic input but the build spec gives no shapes")
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            profile.set_shape(tensor.name, s.min_shape, s.opt_shape, s.max_shape)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildFailed(f"TensorRT {rt.version} could not build an engine of the staged ONNX on {rt.gpu}")
    return bytes(serialized)


def ensure_engine(slot_path: Path, meta: dict, rt: Runtime, *, margin: int | None = None) -> tuple[Path, bool]:
    """The slot's engine for this runtime and GPU: (path, built now). Reused when the key matches."""
    from edgefleet.agent.artifacts import FREE_MARGIN, check_free_space

    key = engine_key(meta["digest"], rt.version, rt.gpu)
    engine = cached_engine(slot_path, key)
    if engine is not None:
        return engine, False
    onnx = (slot_path / meta["name"]).read_bytes()  # the slot's digest check covered these bytes
    try:
        data = build_engine(rt, onnx, settings(slot_path, meta))
    except AgentError:
        raise
    except Exception as exc:  # noqa: BLE001 - TensorRT's own refusal of the graph or of the GPU
        raise EngineBuildFailed(f"TensorRT {rt.version} failed building the engine: {type(exc).__name__}: "
                                f"{str(exc).strip()[:300]}") from None
    check_free_space(slot_path, len(data), FREE_MARGIN if margin is None else margin)
    record = slot_path / ENGINE_RECORD
    if record.exists():
        record.unlink()  # a stale record must never vouch for the new bytes, even after a crash
    write_atomic(slot_path / ENGINE, data)
    write_json(record, {"format": RECORD_FORMAT, "key": key, "artifact": meta["digest"],
                        "tensorrt": rt.version, "gpu": rt.gpu, "sha256": hashlib.sha256(data).hexdigest(),
                        "size": len(data)})
    return slot_path / ENGINE, True


def stage_engine(slot_path: Path, meta: dict) -> bool:
    """At staging: build (or find) the engine of a TensorRT slot; True when one is ready.

    False for other runtimes, and where TensorRT or its GPU is missing: the probe's
    `load_runner` then raises AcceleratorUnavailable and the class's policy applies.
    A build TensorRT refuses raises EngineBuildFailed (E608): nothing switches.
    """
    if not is_tensorrt(meta):
        return False
    try:
        rt = runtime()
    except TensorRTUnavailable:
        return False
    ensure_engine(slot_path, meta, rt)
    return True


# -- running an engine ------------------------------------------------------------------------

@dataclass
class EngineSession:
    """A deserialized engine with its device buffers: `run(inputs) -> outputs` (numpy on the host)."""

    inputs: list[dict]
    outputs: list[dict]
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    device: str


_KSERVE = {"float32": "FP32", "float16": "FP16", "int8": "INT8", "uint8": "UINT8", "int32": "INT32",
           "int64": "INT64", "bool": "BOOL"}


def load_engine(slot_path: Path, meta: dict, rt: Runtime) -> EngineSession:
    """Deserialize the slot's engine (building it first when missing or stale) and allocate its I/O.

    Runs in `load_runner`: a rebuild failing here is TensorRTUnavailable (the class's policy),
    since the slot was probed on this device before.
    """
    try:
        engine_path, _ = ensure_engine(slot_path, meta, rt)
    except EngineBuildFailed as exc:
        raise TensorRTUnavailable(exc.message) from None
    trt, cudart = rt.trt, rt.cudart
    plan = engine_path.read_bytes()
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise TensorRTUnavailable(f"TensorRT {rt.version} cannot deserialize the engine in {engine_path}")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    is_input = {name: engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT for name in names}
    for name in names:
        if is_input[name] and any(int(d) < 0 for d in engine.get_tensor_shape(name)):
            # a dynamic input: the build profile's shape (the device feeds one fixed shape)
            context.set_input_shape(name, tuple(settings(slot_path, meta).opt_shape or ()))
    io: dict[str, tuple[tuple[int, ...], np.dtype, int]] = {}
    ins, outs = [], []
    for name in sorted(names, key=lambda n: not is_input[n]):  # inputs first: they fix the outputs' shapes
        shape = tuple(int(d) for d in context.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise TensorRTUnavailable(f"TensorRT engine tensor {name} has no static shape {shape}")
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        nbytes = int(np.prod(shape)) * dtype.itemsize
        ptr = _cuda(cudart, cudart.cudaMalloc(nbytes), "cudaMalloc")[0]
        context.set_tensor_address(name, int(ptr))
        io[name] = (shape, dtype, int(ptr))
        entry = {"name": name, "datatype": _KSERVE.get(dtype.name, dtype.name.upper()), "shape": list(shape)}
        (ins if is_input[name] else outs).append(entry)
    stream = _cuda(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")[0]
    to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
    to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for entry in ins:
            shape, dtype, ptr = io[entry["name"]]
            host = np.ascontiguousarray(feed[entry["name"]], dtype=dtype).reshape(shape)
            _cuda(cudart, cudart.cudaMemcpy(ptr, host.ctypes.data, host.nbytes, to_device), "cudaMemcpy")
        if not context.execute_async_v3(stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        _cuda(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        result = {}
        for entry in outs:
            shape, dtype, ptr = io[entry["name"]]
            host = np.empty(shape, dtype=dtype)
            _cuda(cudart, cudart.cudaMemcpy(host.ctypes.data, ptr, host.nbytes, to_host), "cudaMemcpy")
            result[entry["name"]] = host
        return result

    run.keepalive = (engine, context, stream)  # type: ignore[attr-defined]  # buffers live with the runner
    return EngineSession(ins, outs, run, f"TensorRT {rt.version} on {rt.gpu}")
