"""The agent refuses to stage an artifact whose provenance fails when the fleet requires it.

Real parts: the example fleet built and compiled with `signing.require_provenance: true` and a
real Sigstore trusted root shipped as a TUF target, a real git daemon, the agent's own cycle.
Local builds are never signed, so "no bundle" is the first refusal; a real bundle of another
artifact (sigstore-python's GitHub wheel bundle) placed in the store is the second.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import SIGSTORE_TESTDATA
from edgefleet.signing.keys import init_keys
from tests.agent_support import DesiredRepo, agent_state, git_daemon, run_agent
from tests.conftest import EXAMPLE_FLEET
from tests.desired_support import built_store

pytestmark = pytest.mark.slow

if not (SIGSTORE_TESTDATA / "prod_trusted_root.json").is_file():
    pytest.skip(f"Sigstore test data not found at {SIGSTORE_TESTDATA}", allow_module_level=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return built_store(tmp_path_factory)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prov-keys") / "keys"
    init_keys(path)
    return path


def requiring_fleet(desired: DesiredRepo) -> None:
    fleet_yaml = desired.fleet / "fleet.yaml"
    text = fleet_yaml.read_text()
    fleet_yaml.write_text(text.replace("  signing:\n", "  signing:\n    trusted_root: sigstore/trusted_root.json\n"
                                                      "    require_provenance: true\n", 1))
    (desired.fleet / "sigstore").mkdir()
    shutil.copy(SIGSTORE_TESTDATA / "prod_trusted_root.json", desired.fleet / "sigstore/trusted_root.json")


def test_an_unsigned_or_foreign_signed_artifact_is_never_staged(tmp_path, store, keys):
    desired = DesiredRepo(tmp_path / "origin", store, keys, EXAMPLE_FLEET)
    requiring_fleet(desired)
    state_doc = desired.publish(wave=0)
    assert state_doc["provenance"]["required"] is True
    with git_daemon(desired.base) as (url, _proc):
        remote = f"{url}/desired"
        state = tmp_path / "device"
        res = run_agent(state, remote, desired.root, store)
        assert res.returncode == 1 and "E620" in res.stderr and "no Sigstore provenance bundle" in res.stderr, res.stderr
        assert agent_state(state)["serving"] is None  # nothing unverified was staged or served
        assert not any((state / "slots").glob("*/slot.json")) if (state / "slots").exists() else True

        # A real bundle, but of another artifact and signer: still refused, with Sigstore's reason.
        foreign = tmp_path / "foreign-store"
        shutil.copytree(store, foreign)
        key = state_doc["workloads"][0]["run"]["artifact"]["key"]
        bundle = foreign / "keys" / key / "provenance.sigstore.json"
        bundle.parent.chmod(0o755)
        shutil.copy(SIGSTORE_TESTDATA / "bundle_v3_github.whl.sigstore", bundle)
        res = run_agent(state, remote, desired.root, foreign)
        assert res.returncode == 1 and "E620" in res.stderr and "provenance of" in res.stderr, res.stderr
        assert "no Sigstore provenance bundle" not in res.stderr
        assert agent_state(state)["serving"] is None
