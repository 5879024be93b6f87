"""Pieces shared by every kind of fleet document.

Documents are Kubernetes-style (apiVersion, kind, metadata, spec) and strict: an
unknown or misspelt field is an error, never ignored. These models are the single
definition of the format: the JSON Schemas in schemas/ are generated from them.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

API_VERSION = "edgefleet/v1"

# DNS-label-like names: they become file names, git paths and TUF target paths.
Name = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
                            description="lower-case letters, digits and '-', at most 63 characters")]
SemVer = Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$",
                              description="semantic version, e.g. 1.2.0 (quote it in YAML)")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="lower-case hex SHA-256")]
# Every number a fleet document holds goes through these two types: a whole number is a
# real integer (`true` is not 1, "512" is not 512) and every number is finite and within
# 2**53, the range JSON consumers (and float arithmetic in gates and waves) keep exact.
# Larger values pass YAML but overflow later stages, so they stop here, at the schema.
# (The bound is a validator, not ge/le, so that a field's own ge/le never merges with it.)
MAX_NUMBER = 2**53


def _bounded(value: int | float) -> int | float:
    if not -MAX_NUMBER <= value <= MAX_NUMBER:
        raise ValueError(f"{value:.6g} is beyond the largest number a fleet file may hold (2**53)")
    return value


Int = Annotated[int, Field(strict=True), AfterValidator(_bounded)]
Float = Annotated[float, Field(strict=True, allow_inf_nan=False), AfterValidator(_bounded)]

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# A century: longer windows overflow datetime arithmetic (year 9999) for no honest use.
MAX_DURATION_SECONDS = 36500 * 86400
_DURATION = re.compile(r"(\d{1,12})([smhd])")


def duration_seconds(value: str) -> int:
    match = _DURATION.fullmatch(value)
    if not match:
        raise ValueError(f"not a duration: {value!r}")
    seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"duration {value} is longer than 36500d (a century)")
    return seconds


def _checked_duration(value: str) -> str:
    duration_seconds(value)
    return value


Duration = Annotated[str, Field(pattern=r"^\d{1,12}(s|m|h|d)$",
                                description="a duration: a whole number and s, m, h or d, e.g. 30m (at most 36500d)"),
                     AfterValidator(_checked_duration)]
Share = Annotated[Float, Field(ge=0.0, le=1.0, description="a fraction from 0 to 1")]
Runtime = Literal["onnxruntime", "openvino", "tensorrt"]
Precision = Literal["fp32", "fp16", "int8"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metadata(Strict):
    name: Name
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class Document(Strict):
    apiVersion: Literal["edgefleet/v1"] = Field(description="always edgefleet/v1")
    metadata: Metadata

    @property
    def name(self) -> str:
        return self.metadata.name
