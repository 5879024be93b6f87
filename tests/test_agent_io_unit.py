"""The rendered systemd unit: parses with systemd-analyze, holds the hardening, quotes its flags."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgefleet.agent.templates import TemplateError, render_systemd_unit, systemd_quote

HARDENING = ["NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
             "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "MemoryMax=512M", "Restart=always",
             "RestartSec=5s", "RestartSteps=6", "RestartMaxDelaySec=5min", "StartLimitIntervalSec=0",
             "CapabilityBoundingSet=", "UMask=0077", "SystemCallFilter=@system-service"]


def _unit(**extra):
    fields = dict(state_dir=Path("/var/lib/edgefleet"), device="pa-robot-001", remote="https://git.example/desired.git",
                  root=Path("/etc/edgefleet/root.json"), status_remote="git://status.example/status.git",
                  store="s3://artifacts/fleet", listen="unix:/run/edgefleet/infer.sock", memory_max="512M",
                  executable=shutil.which("true") or "/bin/true", interval="5m")
    fields.update(extra)
    return render_systemd_unit(**fields)


def _lines(text):
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_the_unit_holds_the_hardening_and_the_agent_flags():
    text = _unit()
    lines = _lines(text)
    for want in HARDENING:
        assert want in lines, want
    assert "ReadWritePaths=/var/lib/edgefleet /run/edgefleet" in lines
    assert "StateDirectory=edgefleet" in lines and "RuntimeDirectory=edgefleet" in lines
    [exec_start] = [line for line in lines if line.startswith("ExecStart=")]
    args = re.findall(r'"((?:[^"\\]|\\.)*)"', exec_start)
    assert args[1:] == ["agent", "run", "--state-dir", "/var/lib/edgefleet", "--device", "pa-robot-001",
                        "--remote", "https://git.example/desired.git", "--root", "/etc/edgefleet/root.json",
                        "--listen", "unix:/run/edgefleet/infer.sock", "--interval", "5m",
                        "--store", "s3://artifacts/fleet", "--status-remote", "git://status.example/status.git"]
    assert _unit() == text  # deterministic


def test_a_tcp_listener_and_a_state_dir_elsewhere():
    lines = _lines(_unit(listen="127.0.0.1:8000", state_dir=Path("/data/edgefleet")))
    assert "ReadWritePaths=/data/edgefleet" in lines
    assert not any(line.startswith(("StateDirectory=", "RuntimeDirectory=")) for line in lines)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    path = tmp_path / "edgefleet-agent.service"
    path.write_text(_unit())
    result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    version = int(re.search(r"systemd (\d+)", subprocess.run(["systemd-analyze", "--version"], capture_output=True,
                                                              text=True).stdout).group(1))
    problems = [line for line in result.stderr.splitlines() if line.strip()]
    if version < 254:  # the backoff keys are newer than this systemd: it ignores them, and says so
        problems = [p for p in problems if not re.search(r"Unknown key '(RestartSteps|RestartMaxDelaySec)'", p)]
    assert result.returncode == 0 and problems == [], result.stderr


@pytest.mark.parametrize("bad", [dict(state_dir=Path("relative")), dict(device="Bad Id"), dict(memory_max="lots"),
                                 dict(extra_read_write=[Path("/a b")]), dict(user="root;rm")])
def test_bad_settings_are_refused(bad):
    with pytest.raises(TemplateError) as err:
        _unit(**bad)
    assert err.value.code == "E690"


def test_arguments_are_quoted_for_systemd():
    assert systemd_quote('a "b" $HOME 50%') == '"a \\"b\\" $$HOME 50%%"'
    with pytest.raises(ValueError):
        systemd_quote("two\nlines")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_rates_the_unit_exposure_low(tmp_path):
    path = tmp_path / "edgefleet-agent.service"
    path.write_text(_unit())
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(path)], capture_output=True,
                            text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    if match is None:
        pytest.skip(f"this systemd-analyze has no offline security check: {result.stderr.strip()[:200]}")
    assert float(match.group(1)) <= 3.0, result.stdout  # 2.1 "OK" with systemd 252 when this was written
