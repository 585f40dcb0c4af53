"""The GPU host's agent unit (deploy/wattshift-agent.service), checked by systemd's own tools as
the daemon's unit is in test_systemd.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "wattshift-agent.service"
SHIPPED_EXEC = "/opt/wattshift/bin/wattshift"
# What the job cannot avoid: network for the broker, AF_UNIX for systemd, ProtectClock's rtc
# ACL, the host's root, CAP_SYS_ADMIN ambient, no user namespace, /proc/driver: 1.6 (the daemon
# with its NVML drop-in is 2.0: it also serves /metrics). More means a hardening option was lost.
MAX_EXPOSURE = 1.6

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze missing: `make test` installs it")


def installed_copy(tmp_path: Path, text: str | None = None) -> Path:
    wattshift = Path(sys.executable).parent / "wattshift"
    assert wattshift.exists(), f"{wattshift}: the package is not installed in this venv"
    text = text if text is not None else UNIT.read_text()
    assert f"ExecStart={SHIPPED_EXEC} agent " in text
    unit = tmp_path / "wattshift-agent.service"
    unit.write_text(text.replace(SHIPPED_EXEC, str(wattshift)))
    return unit


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], check=False, capture_output=True, text=True, timeout=60)


def settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_verify_accepts_the_agent_unit_without_a_single_warning(tmp_path):
    result = analyze("verify", str(installed_copy(tmp_path)))
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_verify_would_catch_a_broken_agent_unit(tmp_path):
    result = analyze("verify", str(installed_copy(tmp_path, UNIT.read_text().replace("DynamicUser=", "DynamicUsr="))))
    assert "Unknown key 'DynamicUsr'" in result.stderr


def test_the_agent_holds_only_what_nvml_power_capping_needs(tmp_path):
    result = analyze("security", "--offline=yes", str(installed_copy(tmp_path)))
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for wattshift-agent\.service: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout
    print(f"systemd-analyze security --offline=yes wattshift-agent.service: {match.group(1)}")
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
    assert "char-nvidia-frontend:rw" in result.stdout
    for kept in ("User=/DynamicUser=", "CapabilityBoundingSet=~CAP_SYS_PTRACE", "ProtectSystem=",
                 "CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)", "NoNewPrivileges=", "PrivateDevices=",
                 "SystemCallFilter=~@privileged"):
        assert f"✓ {kept}" in result.stdout, f"{kept} lost:\n{result.stdout}"


def test_the_agent_unit_is_the_one_the_agent_expects():
    s = settings()
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert re.fullmatch(r"\d+s", s["WatchdogSec"][0])
    assert s["ExecStart"] == [f"{SHIPPED_EXEC} agent --config /etc/wattshift/agent.yaml"]
    assert s["CapabilityBoundingSet"] == ["CAP_SYS_ADMIN"] and s["AmbientCapabilities"] == ["CAP_SYS_ADMIN"]
    assert s["DynamicUser"] == ["yes"] and "User" not in s  # never root
    bound = [path for value in s["BindPaths"] for path in value.split()]
    assert bound == ["-/dev/nvidiactl", *(f"-/dev/nvidia{i}" for i in range(16))]
    assert s["DeviceAllow"] == ["char-nvidia-frontend rw"] and s["DevicePolicy"] == ["closed"]
    assert s["LoadCredential"] == ["secrets:/etc/wattshift/agent-secrets.yaml"]


def test_the_readme_quotes_the_agents_exposure(tmp_path):
    result = analyze("security", "--offline=yes", str(installed_copy(tmp_path)))
    match = re.search(r"Overall exposure level for wattshift-agent\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    readme = " ".join((DEPLOY.parent / "README.md").read_text().split())
    assert f"exposure {match.group(1)} in `systemd-analyze security --offline=yes`" in readme
