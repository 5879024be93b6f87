"""SLSA Provenance v1 for an artifact, as an in-toto Statement v1.

    subject            the artifact (and its extra files), by name and sha256
    buildDefinition    buildType (edgefleet's artifact build), externalParameters (what the
                       fleet repository asked for: model, version, variant, class, runtime,
                       recipe chain), internalParameters (key, toolchain, chosen recipe),
                       resolvedDependencies (source model and data files by digest, and in CI
                       the fleet repository's commit)
    runDetails         builder id (in GitHub Actions the workflow identity that also signs,
                       from GITHUB_SERVER_URL/GITHUB_WORKFLOW_REF) and the invocation

Pure: the record and the environment are passed in; no timestamps, so the same build in
the same CI run gives the same bytes (canonical JSON, RFC 8785).
Spec: https://slsa.dev/spec/v1.0/provenance, https://github.com/in-toto/attestation/tree/main/spec/v1
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import rfc8785

from edgefleet import __version__
from edgefleet.build.record import BuildRecord

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
# Names (and documents) what the parameters below mean; versioned with the record format.
BUILD_TYPE = "https://edgefleet.dev/build-types/artifact/v1"
LOCAL_BUILDER = "urn:edgefleet:builder:local"


def builder_id(env: Mapping[str, str]) -> str:
    """The workflow identity in GitHub Actions (what Fulcio puts in the certificate SAN)."""
    if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_WORKFLOW_REF"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        return f"{server}/{env['GITHUB_WORKFLOW_REF']}"
    return LOCAL_BUILDER


def _ci_details(env: Mapping[str, str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if env.get("GITHUB_ACTIONS") != "true":
        return [], {}
    server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    repo = env.get("GITHUB_REPOSITORY", "")
    deps, metadata = [], {}
    if repo and env.get("GITHUB_SHA"):
        ref = f"@{env['GITHUB_REF']}" if env.get("GITHUB_REF") else ""
        deps.append({"uri": f"git+{server}/{repo}{ref}", "digest": {"gitCommit": env["GITHUB_SHA"]}})
    if repo and env.get("GITHUB_RUN_ID"):
        attempt = env.get("GITHUB_RUN_ATTEMPT", "1")
        metadata["invocationId"] = f"{server}/{repo}/actions/runs/{env['GITHUB_RUN_ID']}/attempts/{attempt}"
    return deps, metadata


def provenance_statement(record: BuildRecord, env: Mapping[str, str]) -> dict[str, Any]:
    subjects = [{"name": ref.name, "digest": {"sha256": ref.sha256}} for ref in (record.artifact, *record.files)]
    source_deps, metadata = _ci_details(env)
    run_details: dict[str, Any] = {"builder": {"id": builder_id(env), "version": {"edgefleet": __version__}}}
    if metadata:
        run_details["metadata"] = metadata
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "model": record.model,
                    "version": record.version,
                    "variant": record.variant,
                    "hardware_class": record.hardware_class,
                    "runtime": record.runtime,
                    "recipes": record.recipes,
                },
                "internalParameters": {
                    "key": record.key,
                    "recipe": record.recipe,
                    "toolchain": record.toolchain,
                },
                "resolvedDependencies": source_deps + [
                    {"name": ref.path, "digest": {"sha256": ref.sha256}, "annotations": {"role": ref.role}}
                    for ref in record.inputs
                ],
            },
            "runDetails": run_details,
        },
    }


def statement_bytes(record: BuildRecord, env: Mapping[str, str]) -> bytes:
    return rfc8785.dumps(provenance_statement(record, env))


def subject_digests(statement: bytes | Mapping[str, Any]) -> dict[str, str]:
    """name -> sha256 of every subject of a statement (raises ValueError if malformed)."""
    data = json.loads(statement) if isinstance(statement, (bytes, str)) else statement
    if not isinstance(data, dict) or data.get("_type") != STATEMENT_TYPE:
        raise ValueError("not an in-toto Statement v1")
    out: dict[str, str] = {}
    for subject in data.get("subject") or []:
        digest = (subject.get("digest") or {}).get("sha256")
        if isinstance(digest, str):
            out[str(subject.get("name", ""))] = digest
    return out
