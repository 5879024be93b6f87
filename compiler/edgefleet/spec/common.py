"""Pieces shared by every kind of fleet document.

Documents are Kubernetes-style (apiVersion, kind, metadata, spec) and strict: an
unknown or misspelt field is an error, never ignored. These models are the single
definition of the format: the JSON Schemas in schemas/ are generated from them.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

API_VERSION = "edgefleet/v1"

# DNS-label-like names: they become file names, git paths and TUF target paths.
Name = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
                            description="lower-case letters, digits and '-', at most 63 characters")]
SemVer = Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$",
                              description="semantic version, e.g. 1.2.0 (quote it in YAML)")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="lower-case hex SHA-256")]
Duration = Annotated[str, Field(pattern=r"^\d+(s|m|h|d)$",
                                description="a duration: a whole number and s, m, h or d, e.g. 30m")]
Share = Annotated[float, Field(ge=0.0, le=1.0, description="a fraction from 0 to 1")]
Runtime = Literal["onnxruntime", "openvino", "tensorrt"]
Precision = Literal["fp32", "fp16", "int8"]

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)([smhd])", value)
    if not match:
        raise ValueError(f"not a duration: {value!r}")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


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
