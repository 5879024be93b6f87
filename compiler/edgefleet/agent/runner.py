"""Load a slot's model with its real runtime and run it: the `Runner` the server and probe share.

`Runner.infer(inputs) -> outputs` is what the KServe handler (agent-io's serving.py) and
the health probe both call, so the probe tests the serving path. Runtimes:
- onnxruntime for `model.onnx` (onnxruntime classes, and TensorRT-ready ONNX, which runs on
  TensorRT/CUDA execution providers when present);
- OpenVINO for `model.xml`/`model.bin` (unpacked from model.ov.tar at staging).

The requested accelerator (execution provider or OpenVINO device) must really be present:
when it is not, `load_runner` raises `AcceleratorUnavailable` and the driver does what
the class declares (`on_accelerator_failure`). Asking for the CPU path (`cpu=True`) loads
on CPUExecutionProvider / OpenVINO CPU.

Test faults (test-only; production never sets them):
  EDGEFLEET_AGENT_TEST_PROVIDER=<name>      request this provider/device instead of the class's
                                            (an absent one, e.g. NoSuchExecutionProvider, is a
                                            real load failure of the runtime: the accelerator test)
  EDGEFLEET_AGENT_TEST_FAIL_SERVING=<ver>   inferences of model version <ver> fail once it serves
                                            (after the switch): the post-switch rollback test

Simulation only (`edgefleet simulate`; production never sets it):
  EDGEFLEET_AGENT_SIM_LATENCY_FACTOR=<f>    every inference takes f times its measured time
                                            (the runtime runs, then the runner waits (f-1) times
                                            as long): a simulated device class slower than this
                                            CPU, so its probe really meets or misses its budget
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgefleet.agent.errors import AgentError

TEST_PROVIDER = "EDGEFLEET_AGENT_TEST_PROVIDER"
TEST_FAIL_SERVING = "EDGEFLEET_AGENT_TEST_FAIL_SERVING"
SIM_LATENCY_FACTOR = "EDGEFLEET_AGENT_SIM_LATENCY_FACTOR"
CPU_PROVIDER = "CPUExecutionProvider"


class AcceleratorUnavailable(AgentError):
    def __init__(self, message: str):
        super().__init__("E612", message, "the class's on_accelerator_failure policy applies",
                         reason="AcceleratorUnavailable")


@dataclass
class Runner:
    """One loaded model. `serving` is set once it is the active model (after the switch)."""

    name: str
    version: str
    variant: str
    digest: str
    slot: str
    platform: str
    device: str                    # provider / OpenVINO device it really runs on
    load_ms: float
    _run: object = field(repr=False)
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    serving: bool = False

    def metadata(self) -> dict:
        return {"name": self.name, "versions": [self.version], "platform": self.platform,
                "inputs": self.inputs, "outputs": self.outputs}

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.serving and os.environ.get(TEST_FAIL_SERVING) == self.version:
            raise RuntimeError(f"test fault {TEST_FAIL_SERVING}={self.version}: inference refused")
        return self._run(inputs)  # type: ignore[operator]


def requested_device(runtime: dict, runtime_config: dict) -> str:
    override = os.environ.get(TEST_PROVIDER)
    if override:
        return override
    providers = (runtime_config.get("session") or {}).get("execution_providers") or []
    if runtime.get("name") == "tensorrt":
        return "TensorrtExecutionProvider"
    return providers[0] if providers else runtime.get("device") or CPU_PROVIDER


def load_runner(slot_path: Path, meta: dict, runtime: dict, runtime_config: dict, *, cpu: bool = False) -> Runner:
    """Load the model in `slot_path` (a staged or active slot) on the class's accelerator."""
    start = time.perf_counter()
    files = meta.get("files", {})
    ident = dict(name=meta["model"], version=meta["version"], variant=meta["variant"], digest=meta["digest"],
                 slot=meta.get("slot", slot_path.name))
    try:
        if "model.xml" in files:
            device, run, ins, outs, platform = _openvino(slot_path / "model.xml", runtime, runtime_config, cpu)
        else:
            device, run, ins, outs, platform = _onnxruntime(slot_path / meta["name"], runtime, runtime_config, cpu)
    except AgentError:
        raise
    except Exception as exc:  # the runtime's refusal of these bytes
        raise AgentError("E608", f"{meta['model']}@{meta['version']} does not load: {type(exc).__name__}: "
                         f"{str(exc).strip()[:300]}", "the artifact is not runnable by this runtime",
                         reason="LoadFailed") from None
    load_ms = (time.perf_counter() - start) * 1000
    run = _sim_scaled(run)
    return Runner(platform=platform, device=device, load_ms=load_ms, _run=run, inputs=ins, outputs=outs, **ident)


_NP = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(uint8)": "UINT8", "tensor(int8)": "INT8",
       "tensor(int64)": "INT64", "tensor(int32)": "INT32"}


def _sim_scaled(run):
    """The simulation's latency factor (SIM_LATENCY_FACTOR; 1 or unset: the runtime as it is)."""
    try:
        factor = float(os.environ.get(SIM_LATENCY_FACTOR) or 1)
    except ValueError:
        factor = 1.0
    if not factor > 1:
        return run

    def scaled(inputs):
        start = time.perf_counter()
        out = run(inputs)
        time.sleep((time.perf_counter() - start) * (factor - 1))
        return out

    return scaled


def _onnxruntime(model: Path, runtime: dict, runtime_config: dict, cpu: bool):
    import onnxruntime as ort

    want = CPU_PROVIDER if cpu else requested_device(runtime, runtime_config)
    if want not in ort.get_available_providers():
        raise AcceleratorUnavailable(f"execution provider {want} is not available "
                                     f"(onnxruntime {ort.__version__} has {', '.join(ort.get_available_providers())})")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session_cfg = runtime_config.get("session") or {}
    threads = int(session_cfg.get("intra_op_num_threads") or 0)
    if threads:
        options.intra_op_num_threads = threads
    providers = [want] if want == CPU_PROVIDER else [want, CPU_PROVIDER]
    session = ort.InferenceSession(str(model), options, providers=providers)
    names = [o.name for o in session.get_outputs()]

    def dims(shape):
        return [d if isinstance(d, int) else -1 for d in shape]

    ins = [{"name": i.name, "datatype": _NP.get(i.type, i.type), "shape": dims(i.shape)} for i in session.get_inputs()]
    outs = [{"name": o.name, "datatype": _NP.get(o.type, o.type), "shape": dims(o.shape)}
            for o in session.get_outputs()]

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, inputs)))

    return want, run, ins, outs, "onnxruntime_onnx"


def _openvino(xml: Path, runtime: dict, runtime_config: dict, cpu: bool):
    import openvino as ov

    core = ov.Core()
    want = "CPU" if cpu else (os.environ.get(TEST_PROVIDER) or runtime.get("device") or "CPU")
    if want not in core.available_devices:
        raise AcceleratorUnavailable(f"OpenVINO device {want} is not available "
                                     f"(this host has {', '.join(core.available_devices)})")
    compiled = core.compile_model(core.read_model(str(xml)), want)
    request = compiled.create_infer_request()
    ins = [{"name": p.get_any_name(), "datatype": str(p.get_element_type()).upper(),
            "shape": [d.get_length() if d.is_static else -1 for d in p.get_partial_shape()]} for p in compiled.inputs]
    outs = [{"name": p.get_any_name(), "datatype": str(p.get_element_type()).upper(),
             "shape": [d.get_length() if d.is_static else -1 for d in p.get_partial_shape()]} for p in compiled.outputs]

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = request.infer({name: value for name, value in inputs.items()})
        return {p.get_any_name(): result[p].copy() for p in compiled.outputs}

    return want, run, ins, outs, "openvino_ir"
