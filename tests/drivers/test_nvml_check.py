"""``python -m wattshift.drivers.nvml_check`` against the simulated library, in-process."""

from __future__ import annotations

import json

import pynvml
import pytest

from wattshift.drivers import nvml_check
from wattshift.simulators.nvml_lib import SimulatedGpu, simulated_nvml


def test_reads_sets_reads_back_and_restores(capsys: pytest.CaptureFixture[str]) -> None:
    gpus = [SimulatedGpu("H100-SXM"), SimulatedGpu("L40S")]
    gpus[0].set_job(1.0, pids=[31337])
    with simulated_nvml(gpus) as lib:
        assert nvml_check.main(["--seconds", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "NVIDIA H100 80GB HBM3" in out and "NVIDIA L40S" in out
    assert "200.0 W .. 700.0 W" in out and "[31337]" in out
    assert "set 450.0 W       read back 450.0 W, enforced 450.0 W" in out  # midway 200..700
    assert "set 225.0 W       read back 225.0 W" in out  # midway 100..350
    assert out.count("restored") == 2
    assert lib.calls["nvmlDeviceSetPowerManagementLimit"] == 4
    assert [g.limit_watts for g in gpus] == [700, 350]


def test_json_report_with_chosen_watts_and_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    gpus = [SimulatedGpu("A100-SXM"), SimulatedGpu("RTX-4090")]
    with simulated_nvml(gpus):
        assert nvml_check.main(["--json", "--seconds", "0.05", "--gpu", "1", "--watts", "300"]) == 0
    report = json.loads(capsys.readouterr().out)
    (entry,) = report["gpus"].values()
    assert entry["reading"]["model"] == "NVIDIA GeForce RTX 4090"
    assert entry["set_limit"]["read_back_watts"] == 300
    assert entry["set_limit"]["restored_watts"] == 450
    assert entry["average_watts"] == pytest.approx(20.0, abs=0.5)  # the idle draw, from energy
    assert gpus[1].limit_watts == 450


def test_without_permission_nothing_changes_and_it_says_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    gpu = SimulatedGpu("H100-SXM")
    gpu.faults.no_permission = True
    with simulated_nvml([gpu]):
        assert nvml_check.main(["--seconds", "0.05"]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "run wattshift as root" in captured.out
    assert "unchanged          700.0 W: nothing to restore" in captured.out
    assert "restored" not in captured.out
    assert "nvml_check: FAILED: " in captured.err and "set: " in captured.err
    assert gpu.limit_watts == 700


def test_without_the_enforced_limit_call_the_set_succeeds_and_says_what_it_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    gpu = SimulatedGpu("H100-SXM")
    with simulated_nvml([gpu], missing_functions={"nvmlDeviceGetEnforcedPowerLimit"}):
        assert nvml_check.main(["--seconds", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "FAILED" not in out
    assert "set 450.0 W       read back 450.0 W, enforced n/a" in out
    assert "read back from     the management limit" in out
    assert "restored           700.0 W" in out and gpu.limit_watts == 700


def test_a_set_that_took_before_its_read_back_failed_is_still_undone_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The set lands; the read-back right after it fails: the card is at the test cap, and the
    # driver backs off that card. The check must still put the original limit back.
    gpu = SimulatedGpu("H100-SXM")
    gpu.faults.errors_after_set["nvmlDeviceGetPowerManagementLimit"] = pynvml.NVML_ERROR_UNKNOWN
    with simulated_nvml([gpu]):
        assert nvml_check.main(["--seconds", "0.05"]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out
    assert gpu.limit_watts == 700  # put back, although its read-back still fails
    assert "RESTORE FAILED" in captured.out and "restore: " in captured.err


def test_no_driver_exits_2_with_a_plain_message(capsys: pytest.CaptureFixture[str]) -> None:
    with simulated_nvml([SimulatedGpu()], driver_loaded=False):
        assert nvml_check.main([]) == 2
    assert "no NVIDIA driver on this host" in capsys.readouterr().err


def test_bad_seconds_is_refused() -> None:
    with pytest.raises(SystemExit) as caught:
        nvml_check.main(["--seconds", "0"])
    assert caught.value.code == 2
