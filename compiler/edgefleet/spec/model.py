"""models/*.yaml: a model, its versions and variants, data and accuracy budget."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgefleet.spec.common import Document, Float, Name, Runtime, SemVer, Sha256, Strict
from edgefleet.spec.recipe import Recipe


class DataRefs(Strict):
    calibration: str | None = Field(None, description="npz (key 'input') of real inputs for INT8 calibration")
    evaluation: str | None = Field(None, description="npz (keys 'input', optional 'label') for the accuracy gate")


class AccuracyBudget(Strict):
    metric: Literal["top1_agreement", "top1_accuracy", "iou", "cosine", "max_abs_error"]
    threshold: Float = Field(description="lowest allowed value (highest for max_abs_error)")
    binarize_at: Float = Field(0.5, description="for iou: threshold that turns output maps into masks")


class Variant(Strict):
    name: Name
    source: str = Field(description="ONNX file, relative to the repository root")
    sha256: Sha256
    description: str = ""


class ModelVersion(Strict):
    version: SemVer
    variants: list[Variant] = Field(min_length=1, description="in order of preference: best first")
    recipes: dict[Runtime, list[Recipe]] = Field(
        default_factory=dict, description="per-runtime recipe chains overriding the class defaults")


class ModelSpec(Strict):
    task: Literal["classification", "segmentation", "detection", "regression"]
    data: DataRefs = DataRefs()
    accuracy: AccuracyBudget | None = None
    recipes: dict[Runtime, list[Recipe]] = Field(
        default_factory=dict, description="per-runtime recipe chains for all versions")
    versions: list[ModelVersion] = Field(min_length=1)


class Model(Document):
    """models/*.yaml: one model and its versions."""

    kind: Literal["Model"]
    spec: ModelSpec
