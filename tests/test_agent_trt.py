"""TensorRT engines built at staging (agent/trt_engine.py), and the path without TensorRT.

TensorRT cannot run here: it needs an NVIDIA GPU and is not pip-installable on this host.
So the builder, runtime and CUDA calls are a MOCK: `MockTensorRT` and `MockCudaRuntime`
below, injected into sys.modules as `tensorrt` and `cuda.bindings.runtime`. They record
every builder call (network flags, builder flags, workspace) and the "engine" they
serialize is the ONNX bytes behind a header, which the mock execution context runs with
real onnxruntime on the CPU; so the agent's probe still checks real outputs against the
golden input. Everything around the mock is real: the example fleet built and compiled,
a git daemon on 127.0.0.1, slots, journal and the engine cache files.

The real no-TensorRT path (this host as it is) runs with real onnxruntime: the class's
`on_accelerator_failure` policy applies. `test_real_tensorrt_builds_an_engine` runs the
real builder and is skipped where tensorrt or a GPU is absent.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edgefleet.agent import slots, trt_engine
from edgefleet.agent.errors import AgentError
from edgefleet.agent.runner import AcceleratorUnavailable, load_runner
from edgefleet.signing.keys import init_keys
from tests.agent_support import V1, V2, DesiredRepo, agent_state, cli_in_process, git_daemon
from tests.conftest import EXAMPLE_FLEET
from tests.desired_support import built_store

ROBOT = "pa-robot-001"   # jetson-vision-standard: TensorRT 10.3, on_accelerator_failure: cpu
PLAN_MAGIC = b"MOCKPLAN1\n"
REAL_TENSORRT = importlib.util.find_spec("tensorrt") is not None


# -- the mock (TensorRT and CUDA cannot run on this host) -----------------------------------------

class MockCudaRuntime(types.ModuleType):
    """MOCK of cuda-python's runtime API: "device memory" is host bytearrays keyed by handle."""

    class cudaMemcpyKind:  # noqa: N801 - the real API's names
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self, gpu: str = "Orin (mock)"):
        super().__init__("cuda.bindings.runtime")
        self.gpu = gpu
        self.memory: dict[int, bytearray] = {}

    def cudaGetDeviceCount(self):  # noqa: N802
        return (0, 1)

    def cudaGetDeviceProperties(self, index):  # noqa: N802
        return (0, types.SimpleNamespace(name=self.gpu.encode() + b"\0\0"))

    def cudaMalloc(self, nbytes):  # noqa: N802
        handle = 0x1000 * (len(self.memory) + 1)
        self.memory[handle] = bytearray(nbytes)
        return (0, handle)

    def cudaStreamCreate(self):  # noqa: N802
        return (0, 7)

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        return (0,)

    def cudaMemcpy(self, dst, src, nbytes, kind):  # noqa: N802
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            self.memory[dst][:nbytes] = ctypes.string_at(src, nbytes)
        else:
            ctypes.memmove(dst, bytes(self.memory[src][:nbytes]), nbytes)
        return (0,)


class MockTensorRT(types.ModuleType):
    """MOCK of the tensorrt module: the calls `trt_engine` makes, recorded in `calls`."""

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            self.severity = severity

    class NetworkDefinitionCreationFlag:
        STRONGLY_TYPED = 5          # the bit position, as in TensorRT 10

    class BuilderFlag:
        FP16 = "FP16"
        INT8 = "INT8"

    class MemoryPoolType:
        WORKSPACE = "WORKSPACE"

    class TensorIOMode:
        INPUT = "INPUT"
        OUTPUT = "OUTPUT"

    def __init__(self, version: str = "10.3.0"):
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls: list[dict] = []         # one per build
        self.deserialized = 0
        self.fail_build = False
        mock = self

        class Network:
            def __init__(self, flags):
                self.flags, self.onnx, self.num_inputs = flags, None, 0

            def get_input(self, i):
                return self.inputs[i]

        class Parser:
            num_errors = 0

            def __init__(self, network, logger):
                self.network = network

            def parse(self, data):
                import onnx

                model = onnx.load_from_string(data)
                self.network.onnx = data
                self.network.inputs = [types.SimpleNamespace(
                    name=i.name, shape=[d.dim_value if d.HasField("dim_value") else -1
                                        for d in i.type.tensor_type.shape.dim]) for i in model.graph.input]
                self.network.num_inputs = len(self.network.inputs)
                return True

        class Config:
            def __init__(self):
                self.flags, self.pools, self.profiles = [], {}, []

            def set_memory_pool_limit(self, pool, size):
                self.pools[pool] = size

            def set_flag(self, flag):
                self.flags.append(flag)

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                return Network(flags)

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                profile = types.SimpleNamespace(shapes={})
                profile.set_shape = lambda name, lo, opt, hi: profile.shapes.update({name: (lo, opt, hi)})
                return profile

            def build_serialized_network(self, network, config):
                mock.calls.append({"network_flags": network.flags, "builder_flags": list(config.flags),
                                   "workspace": config.pools.get("WORKSPACE"),
                                   "profiles": [p.shapes for p in config.profiles]})
                if mock.fail_build:
                    return None
                return PLAN_MAGIC + network.onnx

        class Engine:
            def __init__(self, onnx_bytes):
                import onnxruntime as ort

                self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
                self.ins = self.session.get_inputs()
                self.outs = self.session.get_outputs()
                self.tensors = [*self.ins, *self.outs]
                self.num_io_tensors = len(self.tensors)

            def get_tensor_name(self, i):
                return self.tensors[i].name

            def _t(self, name):
                return next(t for t in self.tensors if t.name == name)

            def get_tensor_shape(self, name):
                return [d if isinstance(d, int) else -1 for d in self._t(name).shape]

            def get_tensor_dtype(self, name):
                return "float32"

            def get_tensor_mode(self, name):
                return "INPUT" if any(t.name == name for t in self.ins) else "OUTPUT"

            def create_execution_context(self):
                return Context(self)

        class Context:
            def __init__(self, engine):
                self.engine, self.addresses, self.shapes = engine, {}, {}

            def set_input_shape(self, name, shape):
                self.shapes[name] = list(shape)

            def get_tensor_shape(self, name):
                shape = self.shapes.get(name) or self.engine.get_tensor_shape(name)
                batch = next(iter(self.shapes.values()), [1])[0]
                return [batch if d < 0 else d for d in shape]

            def set_tensor_address(self, name, ptr):
                self.addresses[name] = ptr

            def execute_async_v3(self, stream):
                cuda = sys.modules["cuda.bindings.runtime"]
                feed = {}
                for t in self.engine.ins:
                    shape = self.get_tensor_shape(t.name)
                    feed[t.name] = np.frombuffer(bytes(cuda.memory[self.addresses[t.name]]),
                                                 dtype=np.float32).reshape(shape)
                for t, value in zip(self.engine.outs, self.engine.session.run(None, feed)):
                    cuda.memory[self.addresses[t.name]][:] = np.ascontiguousarray(value, np.float32).tobytes()
                return True

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, plan):
                mock.deserialized += 1
                assert plan.startswith(PLAN_MAGIC), "the mock was handed bytes it did not build"
                return Engine(plan[len(PLAN_MAGIC):])

        self.Builder, self.OnnxParser, self.Runtime = Builder, Parser, Runtime

    @staticmethod
    def nptype(dtype):
        return np.float32


@pytest.fixture
def mock_trt(monkeypatch):
    """Inject the MOCK tensorrt and cuda runtime (this host has neither TensorRT nor a GPU)."""
    trt, cuda = MockTensorRT(), MockCudaRuntime()
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cuda
    package = types.ModuleType("cuda")
    package.bindings = bindings
    for name, module in {"tensorrt": trt, "cuda": package, "cuda.bindings": bindings,
                         "cuda.bindings.runtime": cuda}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return trt, cuda


# -- a staged slot of the TensorRT class, from the real build ---------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return built_store(tmp_path_factory)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trt-agent-keys") / "keys"
    init_keys(path)
    return path


def trt_record(store: Path) -> dict:
    for record in sorted((store / "keys").glob("*/record.json")):
        data = json.loads(record.read_bytes())
        if data.get("hardware_class") == "jetson-vision-standard" and data["version"] == V1:
            return data
    raise AssertionError("no TensorRT build of the example fleet in the store")


def staged_slot(tmp_path: Path, store: Path, *, engine_cfg: dict | None = None) -> slots.SlotInfo:
    """Stage the real TensorRT-ready ONNX of the example fleet into slot a, as the agent does."""
    rec = trt_record(store)
    art = rec["artifact"]
    blob = lambda d: store / "blobs" / "sha256" / d  # noqa: E731
    engine = {"precision_from_graph": True, "int8": True, "fp16": True, "workspace_mb": 1024,
              "tensorrt_version": "10.3", "build_on_device": True, **(engine_cfg or {})}
    meta = {"model": rec["model"], "version": rec["version"], "variant": rec["variant"], "digest": art["sha256"],
            "size": art["size"], "name": art["name"], "runtime": {"name": "tensorrt", "version": "10.3", "device": "GPU"},
            "runtime_config": {"engine": engine, "precision": "int8"},
            "probe": None, "offline": {"on_accelerator_failure": "cpu"}}
    extra = {f["name"]: blob(f["sha256"]) for f in rec["files"]}
    golden = blob(rec["probe"]["input"]["sha256"])
    return slots.stage(tmp_path / "state", "a", meta, blob(art["sha256"]), golden, extra)


def test_the_builder_gets_the_class_flags_strongly_typed_int8_from_qdq(tmp_path, store, mock_trt):
    trt, cuda = mock_trt
    staged = staged_slot(tmp_path, store)
    assert trt_engine.stage_engine(staged.path, staged.meta) is True
    # Precision from the graph (Q/DQ gives INT8; TensorRT refuses precision flags on a strongly typed
    # network); the class's workspace; the ONNX's dynamic batch pinned to the build spec's one shape.
    one = (1, 1, 8, 8)
    assert trt.calls == [{"network_flags": 1 << 5, "builder_flags": [], "workspace": 1024 << 20,
                          "profiles": [{"image": (one, one, one)}]}]


def test_a_weakly_typed_config_sets_int8_and_fp16_flags_and_its_workspace(tmp_path, store, mock_trt):
    trt, _ = mock_trt
    staged = staged_slot(tmp_path, store, engine_cfg={"precision_from_graph": False, "int8": True, "fp16": True,
                                                       "workspace_mb": 256})
    trt_engine.stage_engine(staged.path, staged.meta)
    assert [(c["network_flags"], c["builder_flags"], c["workspace"]) for c in trt.calls] == [
        (0, ["INT8", "FP16"], 256 << 20)]


def test_the_engine_is_cached_in_the_slot_and_reused_by_key(tmp_path, store, mock_trt):
    trt, _ = mock_trt
    staged = staged_slot(tmp_path, store)
    trt_engine.stage_engine(staged.path, staged.meta)
    engine, record = staged.path / trt_engine.ENGINE, json.loads((staged.path / trt_engine.ENGINE_RECORD).read_bytes())
    assert engine.read_bytes().startswith(PLAN_MAGIC)
    assert record["key"] == trt_engine.engine_key(staged.digest, "10.3.0", "Orin (mock)")
    assert record["artifact"] == staged.digest and record["gpu"] == "Orin (mock)" and record["tensorrt"] == "10.3.0"
    assert not [p for p in staged.path.iterdir() if p.name.startswith(".")]  # no temp file left
    assert slots.read_slot(tmp_path / "state", "a") is not None  # the slot's own digests are untouched
    runner = load_runner(staged.path, staged.meta, staged.meta["runtime"], staged.meta["runtime_config"])
    assert len(trt.calls) == 1 and trt.deserialized == 1  # loaded, not rebuilt
    assert runner.platform == "tensorrt_plan" and runner.device == "TensorRT 10.3.0 on Orin (mock)"
    # The engine answers like the ONNX it was built from (the mock runs it on onnxruntime).
    golden = np.load(staged.path / slots.GOLDEN)
    cpu = load_runner(staged.path, staged.meta, staged.meta["runtime"], staged.meta["runtime_config"], cpu=True)
    name = runner.inputs[0]["name"]
    got = next(iter(runner.infer({name: golden.astype(np.float32)}).values()))
    want = next(iter(cpu.infer({name: golden.astype(np.float32)}).values()))
    assert cpu.device == "CPUExecutionProvider" and np.allclose(got, want, atol=1e-5)
    assert trt_engine.stage_engine(staged.path, staged.meta) is True and len(trt.calls) == 1


def test_a_key_mismatch_refuses_the_cached_engine_and_rebuilds(tmp_path, store, mock_trt):
    trt, cuda = mock_trt
    staged = staged_slot(tmp_path, store)
    trt_engine.stage_engine(staged.path, staged.meta)
    old_key = json.loads((staged.path / trt_engine.ENGINE_RECORD).read_bytes())["key"]
    trt.__version__ = "10.4.1"  # TensorRT upgraded on the device
    new_key = trt_engine.engine_key(staged.digest, "10.4.1", cuda.gpu)
    assert trt_engine.cached_engine(staged.path, new_key) is None  # refused: built by another TensorRT
    assert trt_engine.cached_engine(staged.path, old_key) is not None
    load_runner(staged.path, staged.meta, staged.meta["runtime"], staged.meta["runtime_config"])
    assert len(trt.calls) == 2
    assert json.loads((staged.path / trt_engine.ENGINE_RECORD).read_bytes())["key"] == new_key
    cuda.gpu = "Xavier (mock)"  # the card moved to another module
    trt_engine.stage_engine(staged.path, staged.meta)
    assert len(trt.calls) == 3


def test_a_corrupted_engine_is_never_deserialized_but_rebuilt(tmp_path, store, mock_trt):
    trt, _ = mock_trt
    staged = staged_slot(tmp_path, store)
    trt_engine.stage_engine(staged.path, staged.meta)
    engine = staged.path / trt_engine.ENGINE
    data = bytearray(engine.read_bytes())
    data[len(PLAN_MAGIC) + 100] ^= 0xFF
    engine.write_bytes(bytes(data))
    load_runner(staged.path, staged.meta, staged.meta["runtime"], staged.meta["runtime_config"])
    assert len(trt.calls) == 2 and trt.deserialized == 1  # the flipped bytes never reached the runtime


def test_a_failed_build_at_staging_is_e608_and_leaves_no_engine(tmp_path, store, mock_trt):
    trt, _ = mock_trt
    trt.fail_build = True
    staged = staged_slot(tmp_path, store)
    with pytest.raises(AgentError) as exc:
        trt_engine.stage_engine(staged.path, staged.meta)
    assert exc.value.code == "E608" and exc.value.reason == "EngineBuildFailed"
    assert not (staged.path / trt_engine.ENGINE).exists() and not (staged.path / trt_engine.ENGINE_RECORD).exists()
    # At load time (a slot that passed its probe before) the same failure is an accelerator failure.
    with pytest.raises(AcceleratorUnavailable):
        load_runner(staged.path, staged.meta, staged.meta["runtime"], staged.meta["runtime_config"])


def test_without_tensorrt_staging_builds_nothing_and_loading_is_an_accelerator_failure(tmp_path, store, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails, as on this host (and on a GPU host too)
    staged = staged_slot(tmp_path, store)
    assert trt_engine.stage_engine(staged.path, staged.meta) is False
    with pytest.raises(AcceleratorUnavailable) as exc:
        load_runner(staged.path, staged.meta, staged.meta["runtime"], staged.meta["runtime_config"])
    assert "TensorRT is not installed" in exc.value.message and exc.value.code == "E612"
    cpu = load_runner(staged.path, staged.meta, staged.meta["runtime"], staged.meta["runtime_config"], cpu=True)
    assert cpu.device == "CPUExecutionProvider" and cpu.platform == "onnxruntime_onnx"


# -- the whole agent on the TensorRT class -------------------------------------------------------

def run_robot(state: Path, remote: str, root: Path, store: Path, *extra: str):
    return cli_in_process(["agent", "run", "--state-dir", str(state), "--device", ROBOT, "--remote", remote,
                           "--root", str(root), "--store", str(store), "--once", "--soak", "0.2s",
                           "--confirm-inferences", "3", *extra], {})


def set_policy(desired: DesiredRepo, policy: str) -> None:
    path = desired.fleet / "hardware" / "jetson-vision-standard.yaml"
    path.write_text(re.sub(r"on_accelerator_failure: \w+", f"on_accelerator_failure: {policy}", path.read_text()))


@pytest.fixture
def desired(tmp_path, store, keys):
    return DesiredRepo(tmp_path / "origin", store, keys, EXAMPLE_FLEET)


@pytest.mark.slow
def test_agent_builds_at_staging_switches_on_the_engine_and_a_restart_does_not_rebuild(
        tmp_path, desired, store, mock_trt):
    trt, _ = mock_trt
    state = tmp_path / "robot"
    with git_daemon(desired.base) as (url, _):
        remote = f"{url}/desired"
        desired.publish(wave=0)
        res = run_robot(state, remote, desired.root, store)
        assert res.returncode == 0, res.stderr
        s = agent_state(state)
        assert s["serving"]["version"] == V1 and s["degraded"] is False, s
        v1_slot = state / "slots" / s["serving"]["slot"]
        assert (v1_slot / trt_engine.ENGINE).is_file() and len(trt.calls) == 1
        desired.publish(wave=2)  # every device moves to 1.1.0
        res = run_robot(state, remote, desired.root, store)
        assert res.returncode == 0, res.stderr
        s = agent_state(state)
        assert s["serving"]["version"] == V2 and s["degraded"] is False
        v2_slot = state / "slots" / s["serving"]["slot"]
        record = json.loads((v2_slot / trt_engine.ENGINE_RECORD).read_bytes())
        assert record["artifact"] == s["serving"]["digest"].removeprefix("sha256:") and len(trt.calls) == 2
        # A restart (new process state: the agent starts, serves the active slot, polls): no rebuild.
        res = run_robot(state, remote, desired.root, store)
        assert res.returncode == 0, res.stderr
    assert len(trt.calls) == 2 and trt.deserialized >= 3


@pytest.mark.slow
def test_agent_build_failure_at_staging_keeps_the_old_model_serving(tmp_path, desired, store, mock_trt):
    trt, _ = mock_trt
    state = tmp_path / "robot"
    with git_daemon(desired.base) as (url, _):
        remote = f"{url}/desired"
        desired.publish(wave=0)
        assert run_robot(state, remote, desired.root, store).returncode == 0
        before = agent_state(state)["serving"]
        trt.fail_build = True
        desired.publish(wave=2)
        res = run_robot(state, remote, desired.root, store)
        assert res.returncode == 1 and "E608" in res.stderr and "engine" in res.stderr, res.stderr
        s = agent_state(state)
        assert s["serving"] == before and s["serving"]["version"] == V1
        idle = "b" if before["slot"] == "a" else "a"
        assert slots.read_slot(state, idle) is None  # the refused build is not left staged
        failed = {c["type"]: c for c in s["conditions"]}["UpdateFailed"]
        assert failed["status"] == "True" and "could not build an engine" in failed["message"], failed
        assert len(trt.calls) == 2 and trt.deserialized == 2  # v1 at its install and at this cycle's start


@pytest.mark.slow
@pytest.mark.skipif(REAL_TENSORRT, reason="tensorrt is installed here: the no-TensorRT path is not this host's")
def test_real_no_tensorrt_path_serves_on_the_cpu_per_policy(tmp_path, desired, store):
    """This host as it is: no tensorrt. jetson-vision-standard says `on_accelerator_failure: cpu`,
    so the TensorRT-ready ONNX is probed and served on onnxruntime's CPU path, degraded."""
    state = tmp_path / "robot"
    with git_daemon(desired.base) as (url, _):
        desired.publish(wave=0)
        res = run_robot(state, f"{url}/desired", desired.root, store)
    assert res.returncode == 0, res.stderr
    s = agent_state(state)
    assert s["serving"]["version"] == V1 and s["degraded"] is True
    slot = state / "slots" / s["serving"]["slot"]
    assert not (slot / trt_engine.ENGINE).exists()
    degraded = {c["type"]: c for c in s["conditions"]}["Degraded"]
    assert degraded["status"] == "True" and "TensorRT is not installed" in degraded["message"]


@pytest.mark.slow
@pytest.mark.skipif(REAL_TENSORRT, reason="tensorrt is installed here: the no-TensorRT path is not this host's")
def test_real_no_tensorrt_path_with_policy_stop_serves_nothing(tmp_path, desired, store):
    set_policy(desired, "stop")
    state = tmp_path / "robot"
    with git_daemon(desired.base) as (url, _):
        desired.publish(wave=0)
        res = run_robot(state, f"{url}/desired", desired.root, store)
    assert res.returncode == 1 and "E612" in res.stderr and "TensorRT is not installed" in res.stderr, res.stderr
    assert agent_state(state)["serving"] is None


@pytest.mark.skipif(not REAL_TENSORRT, reason="tensorrt is not installed (no NVIDIA GPU on this host); "
                                              "the mock tests above cover the calls")
def test_real_tensorrt_builds_an_engine(tmp_path, store):
    try:
        trt_engine.runtime()
    except trt_engine.TensorRTUnavailable as exc:
        pytest.skip(f"tensorrt is installed but cannot run: {exc.message}")
    staged = staged_slot(tmp_path, store)
    assert trt_engine.stage_engine(staged.path, staged.meta) is True
    runner = load_runner(staged.path, staged.meta, staged.meta["runtime"], staged.meta["runtime_config"])
    golden = np.load(staged.path / slots.GOLDEN).astype(np.float32)
    cpu = load_runner(staged.path, staged.meta, staged.meta["runtime"], staged.meta["runtime_config"], cpu=True)
    name = runner.inputs[0]["name"]
    got = next(iter(runner.infer({name: golden}).values()))
    want = next(iter(cpu.infer({name: golden}).values()))
    assert np.max(np.abs(got - want)) < 0.5
