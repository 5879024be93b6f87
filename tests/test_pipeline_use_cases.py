"""The use cases called from code, as the agent and the simulator will: typed results, no printing,
the caller's inputs untouched, and `plan`'s numbers the same as `validate`'s."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

from edgefleet.pipeline.validate import validate, validate_files, validate_repository

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)


def test_validate_and_validate_files_give_the_same_report(fleet_copy):
    from edgefleet.load.repo import display_root_for, fleet_files

    path = fleet_copy / "rollouts/meter-digits-1-1.yaml"
    path.write_text(path.read_text().replace("model: meter-digits", "model: no-such-model", 1))
    on_disk = validate(fleet_copy)
    files = {rel: (fleet_copy / rel).read_bytes() for rel in fleet_files(fleet_copy)}
    _, given = validate_files(files, fleet_copy, display_root_for(fleet_copy))
    assert list(on_disk.diagnostics) == given and not on_disk.ok
    assert on_disk.counts["devices"] == 48


def test_compile_pipeline_returns_a_typed_result_and_prints_nothing(fleet_copy, tmp_path, monkeypatch, capsys):
    import edgefleet.build.index as index
    from edgefleet.pipeline.compile import CompileRequest, CompileSummary, compile_desired_state
    from edgefleet.signing.keys import init_keys
    from tests.desired_support import synthetic_artifacts

    monkeypatch.setattr(index, "built_artifacts", lambda repo, store=None: synthetic_artifacts(repo))
    init_keys(tmp_path / "keys")
    request = CompileRequest(fleet_copy, tmp_path / "out", NOW, keys_dir=tmp_path / "keys", env={})
    first = compile_desired_state(request)
    assert isinstance(first.summary, CompileSummary) and first.summary.devices == 48
    assert first.summary.devices_changed == 48 and "metadata/timestamp.json" in first.summary.written
    assert not any(d.is_error for d in first.diagnostics)
    again = compile_desired_state(request)
    assert again.summary.written == () and again.summary.devices_changed == 0
    assert capsys.readouterr() == ("", "")


def test_compile_pipeline_reports_missing_keys_as_a_result(fleet_copy, tmp_path, monkeypatch):
    import edgefleet.build.index as index
    from edgefleet.pipeline.compile import CompileRequest, compile_desired_state
    from tests.desired_support import synthetic_artifacts

    monkeypatch.setattr(index, "built_artifacts", lambda repo, store=None: synthetic_artifacts(repo))
    result = compile_desired_state(CompileRequest(fleet_copy, tmp_path / "out", NOW, env={}))
    assert result.summary is None and [d.code for d in result.diagnostics if d.is_error] == ["E501"]
    assert result.diagnostics[-1].location.path == ""  # about the run, not a file
    assert not (tmp_path / "out" / "metadata").exists()


def test_compile_leaves_a_loaded_repository_as_it_was(fleet_copy):
    """The stage compile streams from reads the inventory and never empties it (it used to)."""
    from edgefleet.desired.compile import prepare
    from tests.desired_support import synthetic_artifacts

    repo, _ = validate_repository(fleet_copy)
    devices = list(repo.devices)
    compiler, _ = prepare(repo, synthetic_artifacts(repo))
    states = list(compiler.stream(lambda _: (0, None), 1))
    assert len(states) == 48 and repo.devices == devices


def test_plan_previews_unbuilt_artifacts_at_validations_estimate(fleet_copy):
    """The size plan shows for an artifact not built yet is the one validate's E303 check uses."""
    from edgefleet.pipeline.explain import ExplainRequest, explain
    from edgefleet.pipeline.plan import preview_artifacts

    repo, diags = validate_repository(fleet_copy)
    notes: list[str] = []
    artifacts, problems = preview_artifacts(repo, None, notes)
    assert artifacts and not any(p.is_error for p in problems) and any("estimated" in n for n in notes)
    for need, artifact in artifacts.items():
        report = explain(ExplainRequest(fleet_copy, f"{need.model}@{need.version}", (need.hardware_class,))).reports[0]
        chosen = next(v for v in report["variants"] if v["name"] == report["variant"])
        check = next(c for c in chosen["checks"] if c["check"] == "artifact size")
        estimated = int(re.search(r"\(([0-9,]+) bytes", check["model"]).group(1).replace(",", ""))
        assert artifact.size == estimated, need
        assert artifact.precision == chosen["precision"] and artifact.variant == report["variant"]


def test_explain_pipeline_reports_per_class(fleet_copy):
    from edgefleet.pipeline.explain import ExplainRequest, explain

    result = explain(ExplainRequest(fleet_copy, "meter-digits@1.1.0", all_classes=True))
    assert len(result.reports) == 4 and json.dumps(result.reports)  # JSON-ready
    assert result.fits == all(r["fits"] for r in result.reports)


def test_compile_pipeline_from_a_loaded_repository_keys_and_store_leaves_them_untouched(fleet_copy, tmp_path,
                                                                                     monkeypatch):
    """The agent/simulator path: everything passed in, nothing reloaded, nothing changed."""
    from edgefleet.build.store import LocalStore
    from edgefleet.pipeline.compile import CompileRequest, compile_desired_state
    from edgefleet.signing.keys import init_keys, load_keys
    import edgefleet.build.index as index
    from tests.desired_support import synthetic_artifacts

    repo, _ = validate_repository(fleet_copy)
    devices, hardware, rollouts = list(repo.devices), dict(repo.hardware), dict(repo.rollouts)
    init_keys(tmp_path / "keys")
    keys = load_keys(tmp_path / "keys")
    store = LocalStore(tmp_path / "store")
    seen = []

    def built(r, s=None):
        seen.append((r, s))
        return synthetic_artifacts(r)

    monkeypatch.setattr(index, "built_artifacts", built)
    outs = []
    for i in range(3):
        result = compile_desired_state(CompileRequest(fleet_copy, tmp_path / f"out{i}", NOW, repo=repo, keys=keys,
                                                      artifact_store=store, env={}))
        assert result.summary is not None, result.diagnostics
        outs.append((tmp_path / f"out{i}" / "metadata/timestamp.json").read_bytes())
    assert all(r is repo and s is store for r, s in seen)
    assert repo.devices == devices and repo.hardware == hardware and repo.rollouts == rollouts
    assert len(set(outs)) == 1, "same inputs, byte-identical outputs"
