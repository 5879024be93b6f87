"""Optimization recipes: how an artifact is made from a source model for a runtime."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgefleet.spec.common import Float, Precision, Strict


class Recipe(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="id recorded in build records")
    precision: Precision
    quantization: Literal["static", "dynamic"] | None = Field(
        None, description="for int8: static (calibrated QDQ) or dynamic")
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: Float = Field(99.999, gt=90, le=100)
    per_channel: bool = False
    symmetric: bool | None = Field(None, description="symmetric activations (TensorRT INT8 requires it)")
    reduce_range: bool | None = Field(None, description="7-bit weights for CPUs without VNNI")
    exclude_nodes: list[str] = Field(default_factory=list, description="nodes kept in float")
    exclude_op_types: list[str] = Field(default_factory=list, description="operator types kept in float")
    sparsity: Float | None = Field(None, ge=0.0, lt=1.0, description="magnitude pruning to this sparsity first")
    graph_optimization: Literal["none", "basic", "extended"] = "basic"
    max_latency_ratio: Float | None = Field(
        None, gt=0, description="reject the artifact if its median latency exceeds this multiple of FP32's "
                                "on the build host (unset: latency is recorded, not gated)")
