"""hardware/*.yaml: what a class of device can really take."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from edgefleet.spec.common import Document, Duration, Float, Int, Precision, Runtime, Strict
from edgefleet.spec.recipe import Recipe


class Accelerator(Strict):
    kind: Literal["none", "gpu", "vpu", "npu"] = "none"
    name: str = ""
    compute_capability: str | None = Field(
        None, pattern=r"^\d+\.\d+$", description="CUDA compute capability (TensorRT engines are tied to it)")


class RuntimeSpec(Strict):
    name: Runtime
    version: str = Field(pattern=r"^\d+\.\d+(\.\d+)?$", description="runtime version on the device, e.g. 1.20")
    device: str = Field(
        "CPU", description="OpenVINO device (CPU, GPU, NPU), onnxruntime execution provider, or GPU for TensorRT")


class InputSpec(Strict):
    shape: list[Int] = Field(min_length=1, description="shape the device feeds the model, batch first")
    dtype: Literal["float32", "float16", "uint8", "int8"] = "float32"


class OfflinePolicy(Strict):
    max_offline: Duration = Field("30d", description="how long the device keeps running without contact")
    on_accelerator_failure: Literal["fallback_model", "cpu", "stop"] = Field(
        "cpu", description="what runs when the accelerator or its runtime fails")


class HardwareClassSpec(Strict):
    cpu_arch: Literal["x86_64", "aarch64", "armv7l"]
    cpu: str = ""
    accelerator: Accelerator = Accelerator()
    runtime: RuntimeSpec
    precisions: list[Precision] = Field(min_length=1, description="precisions the runtime executes here")
    ram_mb: Int = Field(gt=0, description="total RAM of the device")
    model_ram_budget_mb: Int = Field(gt=0, description="RAM a model may use at inference")
    storage_mb: Int = Field(gt=0, description="storage free for artifacts (both A/B slots)")
    max_artifact_mb: Float = Field(gt=0, description="largest artifact this class accepts (link budget)")
    power_w: Float = Field(gt=0, description="power envelope")
    latency_budget_ms: Float = Field(gt=0, description="per-inference latency budget on the device")
    batch_size: Int = Field(1, ge=1)
    input: InputSpec | None = None
    offline: OfflinePolicy = OfflinePolicy()
    requires_accuracy_gate: bool = Field(True, description="artifacts must pass an accuracy gate on evaluation data")
    recipes: list[Recipe] = Field(
        default_factory=list, description="optimization recipes, first preferred, the rest fallbacks in order")

    @field_validator("precisions")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("precisions must not repeat")
        return value


class HardwareClass(Document):
    """hardware/*.yaml: one device class."""

    kind: Literal["HardwareClass"]
    spec: HardwareClassSpec
