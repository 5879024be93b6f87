"""A hardware class must be internally consistent: its own figures cannot contradict each other.

Checked for every class, whether or not a rollout uses it yet (pure; diagnostics point at
both fields, the second as `related`):

  E220  model_ram_budget_mb over ram_mb: the model would be promised more RAM than exists.
  E221  two artifacts of max_artifact_mb over storage_mb: the device keeps the running and
        the staged artifact (A/B slots), so the largest artifact the class accepts must fit twice.
  E222  model_ram_budget_mb plus the runtime's own resident memory over ram_mb: the runtime
        (its libraries, allocator and session) lives in the same RAM as the model.

RUNTIME_RESIDENT_MB is the one table of what each runtime itself keeps resident, with where
each figure comes from. They are lower bounds for a CPU session; GPU execution providers
and plugins take more.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgefleet.core.diagnostics import Diagnostic, error
from edgefleet.load.repo import Loaded
from edgefleet.spec import HardwareClass

E_BUDGET_OVER_RAM = "E220"
E_SLOTS_OVER_STORAGE = "E221"
E_RUNTIME_OVER_RAM = "E222"


@dataclass(frozen=True)
class ResidentFigure:
    mb: int
    source: str


RUNTIME_RESIDENT_MB: dict[str, ResidentFigure] = {
    # Measured here: `python bench/bench_runtime_resident.py` (VmRSS after import, one CPU
    # session of the example's 70 KB student model and one run, minus the interpreter's own):
    # onnxruntime 1.32.0 30.2 MB, OpenVINO 2026.4.1 CPU plugin 69.7 MB, x86_64, 2026-12-01.
    "onnxruntime": ResidentFigure(31, "measured: bench/bench_runtime_resident.py, onnxruntime 1.32.0 CPU"),
    "openvino": ResidentFigure(70, "measured: bench/bench_runtime_resident.py, OpenVINO 2026.4.1 CPU"),
    # Not runnable here (no GPU). NVIDIA's answer for Jetson, whose GPU shares the RAM:
    # "To inference with cuDNN (TensorRT), it requires at least 600 MB of memory for loading
    # the library" (forums.developer.nvidia.com/t/high-ram-consumption-with-cuda-and-tensorrt-
    # on-jetson-xavier-nx/183109/3).
    "tensorrt": ResidentFigure(600, "NVIDIA developer forum: at least 600 MB to load TensorRT/cuDNN on Jetson"),
}


def runtime_resident_mb(runtime: str) -> int:
    return RUNTIME_RESIDENT_MB[runtime].mb


def class_consistency(hw: Loaded[HardwareClass]) -> list[Diagnostic]:
    spec, src, cls = hw.doc.spec, hw.source, hw.doc.metadata.name
    out: list[Diagnostic] = []
    budget_at = src.at("spec", "model_ram_budget_mb")
    ram_at = (src.at("spec", "ram_mb"), f"ram_mb of hardware class '{cls}'")
    if spec.model_ram_budget_mb > spec.ram_mb:
        out.append(error(
            E_BUDGET_OVER_RAM, f"hardware class '{cls}': model_ram_budget_mb {spec.model_ram_budget_mb:g} is more "
                               f"than the device's ram_mb {spec.ram_mb:g}",
            budget_at, "the model budget is a share of the device's RAM: lower model_ram_budget_mb or correct ram_mb",
            related=[ram_at]))
    else:
        runtime = spec.runtime.name
        figure = RUNTIME_RESIDENT_MB[runtime]
        if spec.model_ram_budget_mb + figure.mb > spec.ram_mb:
            out.append(error(
                E_RUNTIME_OVER_RAM,
                f"hardware class '{cls}': model_ram_budget_mb {spec.model_ram_budget_mb:g} plus {runtime}'s own "
                f"resident memory ({figure.mb} MB) is {spec.model_ram_budget_mb + figure.mb:g} MB, more than "
                f"ram_mb {spec.ram_mb:g}",
                budget_at, f"leave room for the runtime: model_ram_budget_mb at most "
                           f"{spec.ram_mb - figure.mb:g} (the {runtime} figure: {figure.source})",
                related=[ram_at, (src.at("spec", "runtime", "name"), f"runtime of hardware class '{cls}'")]))
    slots = 2 * spec.max_artifact_mb
    if slots > spec.storage_mb:
        out.append(error(
            E_SLOTS_OVER_STORAGE,
            f"hardware class '{cls}': two slots of the largest artifact it accepts (2 x max_artifact_mb "
            f"{spec.max_artifact_mb:g} = {slots:g} MB) do not fit storage_mb {spec.storage_mb:g}",
            src.at("spec", "max_artifact_mb"),
            f"the device keeps the running and the staged artifact (A/B slots): lower max_artifact_mb to at most "
            f"{spec.storage_mb / 2:g}, or correct storage_mb",
            related=[(src.at("spec", "storage_mb"), f"storage_mb of hardware class '{cls}'")]))
    return out
