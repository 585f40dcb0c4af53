"""The shipped unit file, checked by systemd's own tools (Debian 12: systemd 252).

`systemd-analyze verify` checks that ExecStart= exists, so it runs on a copy whose ExecStart
points at this checkout's installed `wattshift` (the shipped path, /opt/wattshift/bin/wattshift,
is where the README installs it on a real host); everything else is the shipped text.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "wattshift.service"
DROP_INS = DEPLOY / "wattshift.service.d"
SHIPPED_EXEC = "/opt/wattshift/bin/wattshift"

# The exposure the job cannot avoid: it must reach miners, a broker and price feeds and serve
# /metrics (PrivateNetwork 0.5, AF_INET/AF_INET6 0.3, no site-independent IPAddressAllow 0.2),
# talk AF_UNIX to systemd (0.1), and ProtectClock's own char-rtc read ACL (0.1), running in the
# host's root (0.1, RootImage= is for images, not a pip-installed venv): 1.3 at most. Anything
# more means a hardening option was lost.
MAX_EXPOSURE = 1.3
# With the GPU drop-in: CAP_SYS_ADMIN as ambient capability (0.3 + 0.1), no user namespace (0.2)
# and /proc/driver (0.1) on top. The GPU device nodes are bound into the private /dev, so
# PrivateDevices= stays on (it cost 0.2 more as PrivateDevices=no).
MAX_EXPOSURE_GPU = MAX_EXPOSURE + 0.7

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze missing: `make test` installs it")


def installed_copy(tmp_path: Path, *, gpu: bool) -> Path:
    wattshift = Path(sys.executable).parent / "wattshift"
    assert wattshift.exists(), f"{wattshift}: the package is not installed in this venv"
    text = UNIT.read_text()
    assert f"ExecStart={SHIPPED_EXEC} " in text
    unit = tmp_path / "wattshift.service"
    unit.write_text(text.replace(SHIPPED_EXEC, str(wattshift)))
    if gpu:
        shutil.copytree(DROP_INS, tmp_path / "wattshift.service.d")
    return unit


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], check=False, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("gpu", [False, True], ids=["miners", "with-gpu-drop-in"])
def test_verify_accepts_the_unit_without_a_single_warning(tmp_path, gpu):
    result = analyze("verify", str(installed_copy(tmp_path, gpu=gpu)))
    # verify exits 0 on unknown keys and bad values, which it only warns about: any output fails.
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_verify_would_catch_a_broken_unit(tmp_path):
    unit = installed_copy(tmp_path, gpu=False)
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    result = analyze("verify", str(unit))
    assert "Unknown key 'ProtectSytem'" in result.stderr


def exposure(unit: Path) -> tuple[float, str]:
    result = analyze("security", "--offline=yes", str(unit))
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for wattshift\.service: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout
    return float(match.group(1)), result.stdout


def test_security_exposure_is_as_low_as_a_networked_daemon_allows(tmp_path):
    score, report = exposure(installed_copy(tmp_path, gpu=False))
    print(f"systemd-analyze security --offline=yes wattshift.service: {score}")
    print("\n".join(line for line in report.splitlines() if line.startswith("✗")))
    assert score <= MAX_EXPOSURE, report
    for kept in ("User=/DynamicUser=", "CapabilityBoundingSet=~CAP_SYS_ADMIN", "PrivateDevices=",
                 "SystemCallFilter=~@privileged", "ProtectSystem=", "NoNewPrivileges="):
        assert f"✓ {kept}" in report, f"{kept} lost:\n{report}"


def test_the_gpu_drop_in_adds_only_what_nvml_power_capping_needs(tmp_path):
    score, report = exposure(installed_copy(tmp_path, gpu=True))
    print(f"systemd-analyze security --offline=yes wattshift.service (+ NVML drop-in): {score}")
    assert score <= MAX_EXPOSURE_GPU, report
    assert "char-nvidia-frontend:rw" in report
    for kept in ("User=/DynamicUser=", "CapabilityBoundingSet=~CAP_SYS_PTRACE", "ProtectSystem=",
                 "CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)", "NoNewPrivileges=", "PrivateDevices="):
        assert f"✓ {kept}" in report, f"{kept} lost with the drop-in:\n{report}"


def test_the_gpu_drop_in_binds_the_nodes_nvml_opens_into_the_private_dev():
    settings: dict[str, list[str]] = {}
    for path in DROP_INS.glob("*.conf"):
        for line in path.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                settings.setdefault(key, []).append(value)
    assert settings["PrivateDevices"] == ["yes"] and settings["DevicePolicy"] == ["closed"]
    bound = [path for value in settings["BindPaths"] for path in value.split()]
    # "-": a node this host lacks is skipped rather than failing the start (and the miners with it).
    assert bound == ["-/dev/nvidiactl", *(f"-/dev/nvidia{i}" for i in range(16))]
    assert settings["DeviceAllow"] == ["char-nvidia-frontend rw"]  # major 195: exactly these nodes


def test_the_readme_quotes_both_exposure_figures(tmp_path):
    readme = " ".join((DEPLOY.parent / "README.md").read_text().split())  # lines wrap anywhere
    (tmp_path / "alone").mkdir()
    (tmp_path / "merged").mkdir()
    alone, _ = exposure(installed_copy(tmp_path / "alone", gpu=False))
    merged, _ = exposure(installed_copy(tmp_path / "merged", gpu=True))
    assert f"exposure of {alone} in `systemd-analyze security --offline=yes`" in readme
    assert f"{merged} with the drop-in merged" in readme


def test_the_unit_is_the_one_the_daemon_expects():
    text = UNIT.read_text()
    settings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert settings["StateDirectory"] == "wattshift" and settings["ConfigurationDirectory"] == "wattshift"
    assert settings["Restart"] == "on-failure"
    assert re.fullmatch(r"\d+s", settings["WatchdogSec"])
