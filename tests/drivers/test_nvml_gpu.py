"""The NVML driver, running the real nvidia-ml-py binding over the simulated library."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pynvml
import pytest
from simulated_gpus import ManualClock

from wattshift.drivers.base import DeviceError
from wattshift.drivers.catalog import gpu_drivers
from wattshift.drivers.gpu import GpuDriver
from wattshift.drivers.nvml_gpu import (
    NvmlGpus,
    NvmlUnavailable,
    average_watts,
    energy_delta_joules,
)
from wattshift.model.gpu import GpuReading
from wattshift.model.miner import Failure
from wattshift.simulators.gpu_physics import GPU_MODELS
from wattshift.simulators.nvml_lib import SimulatedGpu, SimulatedNvmlLib, simulated_nvml

H100 = GPU_MODELS["H100-SXM"]
A100 = GPU_MODELS["A100-SXM"]
QUARANTINE_S = 30.0
RETRY_S = 2.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gpus(clock: ManualClock) -> list[SimulatedGpu]:
    return [SimulatedGpu("H100-SXM", clock=clock), SimulatedGpu("A100-SXM", clock=clock)]


@pytest.fixture
def lib(gpus: list[SimulatedGpu]) -> Iterator[SimulatedNvmlLib]:
    with simulated_nvml(gpus, seed=5) as lib:
        yield lib


def make(clock: ManualClock, gpus: object = "all", timeout: float = 5.0) -> NvmlGpus:
    return NvmlGpus(
        gpus,  # type: ignore[arg-type]
        call_timeout_seconds=timeout,
        retry_backoff_seconds=RETRY_S,
        quarantine_seconds=QUARANTINE_S,
        clock=clock,
    )


@pytest.fixture
async def driver(lib: SimulatedNvmlLib, clock: ManualClock) -> AsyncIterator[NvmlGpus]:
    d = make(clock)
    await d.start()
    yield d
    await d.close()


async def read(driver: NvmlGpus, uuid: str) -> GpuReading:
    r = (await driver.read_all())[uuid]
    assert isinstance(r, GpuReading), r
    return r


async def read_error(driver: NvmlGpus, uuid: str) -> DeviceError:
    r = (await driver.read_all())[uuid]
    assert isinstance(r, DeviceError), r
    return r


def test_registered_as_nvml_and_meets_the_contract() -> None:
    assert gpu_drivers().get("nvml") is NvmlGpus
    assert isinstance(NvmlGpus(), GpuDriver)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpus": "some"}, "gpus: 'some'"),
        ({"gpus": []}, "gpus: the list is empty"),
        ({"gpus": [-1]}, "gpus: -1"),
        ({"gpus": [1.5]}, "gpus: 1.5"),
        ({"call_timeout_seconds": 0}, "call_timeout_seconds: 0"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NvmlGpus(**kwargs)  # type: ignore[arg-type]


async def test_reads_every_field_in_watts_and_joules(
    driver: NvmlGpus, gpus: list[SimulatedGpu], clock: ManualClock
) -> None:
    h100, a100 = gpus
    h100.set_job(1.0, pids=[4242, 4243])
    clock.advance(2)
    r = await read(driver, str(h100.uuid))
    assert (r.index, r.model) == (0, H100.name)
    assert r.watts == pytest.approx(h100.draw_watts()) == pytest.approx(H100.full_load_watts)
    assert (r.limit_watts, r.enforced_limit_watts) == (700.0, 700.0)
    assert (r.limits.min_watts, r.limits.max_watts, r.limits.default_watts) == (200, 700, 700)  # type: ignore[union-attr]
    assert r.energy_joules == pytest.approx(h100.energy_mj() / 1000)
    assert r.utilisation_pct == 100.0
    assert r.temperature_c == round(h100.temperature_c())
    assert r.processes == (4242, 4243)
    assert r.cap_settable
    idle = await read(driver, str(a100.uuid))
    assert (idle.watts, idle.processes, idle.model) == (A100.idle_watts, (), A100.name)


async def test_energy_counter_deltas_give_the_mean_draw(
    driver: NvmlGpus, gpus: list[SimulatedGpu], clock: ManualClock
) -> None:
    uuid = str(gpus[0].uuid)
    before = (await read(driver, uuid)).energy_joules
    clock.advance(10)
    after = (await read(driver, uuid)).energy_joules
    assert energy_delta_joules(before, after) == pytest.approx(H100.idle_watts * 10, abs=0.01)
    assert average_watts(before, after, 10) == pytest.approx(H100.idle_watts, abs=0.01)
    assert energy_delta_joules(after, before) is None  # the counter restarted
    assert average_watts(None, after, 10) is None


async def test_selects_by_index_and_uuid(lib: SimulatedNvmlLib, clock: ManualClock) -> None:
    second = str(lib.gpus[1].uuid)
    d = make(clock, [second])
    assert await d.start() == [second]
    assert list(await d.read_all()) == [second]
    await d.close()
    d = make(clock, [1, 0])
    assert await d.start() == [second, lib.gpus[0].uuid]
    await d.close()
    d = make(clock, [7])
    with pytest.raises(ValueError, match="gpus: index 7 does not exist"):
        await d.start()
    await d.close()


async def test_set_reads_back_and_the_draw_follows(
    driver: NvmlGpus, gpus: list[SimulatedGpu], clock: ManualClock
) -> None:
    h100 = gpus[0]
    h100.set_job(1.0)
    assert await driver.set_power_limit(str(h100.uuid), 350) == 350.0
    assert h100.limit_watts == 350
    clock.advance(2)
    r = await read(driver, str(h100.uuid))
    assert (r.limit_watts, r.enforced_limit_watts, r.watts) == (350, 350, pytest.approx(350))


async def test_returns_the_enforced_limit_when_the_card_holds_less(
    driver: NvmlGpus, gpus: list[SimulatedGpu]
) -> None:
    gpus[0].set_system_cap(300)
    assert await driver.set_power_limit(str(gpus[0].uuid), 500) == 300.0


@pytest.mark.parametrize("watts", [150, 701, float("nan")])
async def test_out_of_range_is_refused_before_any_call(
    driver: NvmlGpus, gpus: list[SimulatedGpu], lib: SimulatedNvmlLib, watts: float
) -> None:
    with pytest.raises(DeviceError) as caught:
        await driver.set_power_limit(str(gpus[0].uuid), watts)
    assert caught.value.failure is Failure.REFUSED
    if watts == watts:  # not NaN: the message names the watts and the range
        assert f"{watts:g} W is outside this card's range 200-700 W" in caught.value.detail
    assert "nvmlDeviceSetPowerManagementLimit" not in lib.calls
    assert gpus[0].limit_watts == 700


async def test_unknown_uuid_is_a_clear_error(driver: NvmlGpus) -> None:
    with pytest.raises(ValueError, match="uuid: 'GPU-nope' is not a GPU this driver manages"):
        await driver.set_power_limit("GPU-nope", 300)


async def test_a_set_that_changes_nothing_is_ignored(
    driver: NvmlGpus, gpus: list[SimulatedGpu]
) -> None:
    gpus[0].faults.ignore_set = True
    with pytest.raises(DeviceError) as caught:
        await driver.set_power_limit(str(gpus[0].uuid), 400)
    assert caught.value.failure is Failure.IGNORED
    assert "holds 700 W" in caught.value.detail


async def test_an_unsupported_field_is_none_and_not_asked_again(
    lib: SimulatedNvmlLib, gpus: list[SimulatedGpu], clock: ManualClock
) -> None:
    uuid = str(gpus[0].uuid)
    driver = make(clock, [uuid])
    await driver.start()
    gpus[0].faults.not_supported.add("nvmlDeviceGetTotalEnergyConsumption")
    r = await read(driver, uuid)
    assert r.energy_joules is None and r.watts is not None
    asked = lib.calls["nvmlDeviceGetTotalEnergyConsumption"]
    gpus[0].faults.not_supported.clear()  # were it asked, it would answer now
    assert (await read(driver, uuid)).energy_joules is None
    assert lib.calls["nvmlDeviceGetTotalEnergyConsumption"] == asked
    await driver.close()


async def test_setting_unsupported_is_reported_and_the_cap_is_not_settable(
    driver: NvmlGpus, gpus: list[SimulatedGpu]
) -> None:
    gpus[0].faults.not_supported.add("nvmlDeviceSetPowerManagementLimit")
    with pytest.raises(DeviceError) as caught:
        await driver.set_power_limit(str(gpus[0].uuid), 400)
    assert caught.value.failure is Failure.UNSUPPORTED
    assert not (await read(driver, str(gpus[0].uuid))).cap_settable


async def test_a_missing_function_falls_back_or_gives_none(
    gpus: list[SimulatedGpu], clock: ManualClock
) -> None:
    with simulated_nvml(gpus, missing_functions={"nvmlDeviceGetTemperatureV"}) as lib:
        d = make(clock)
        uuid = (await d.start())[0]
        assert (await read(d, uuid)).temperature_c == round(gpus[0].temperature_c())  # the old call
        lib.remove_function("nvmlDeviceGetTemperature")
        lib.remove_function("nvmlDeviceGetComputeRunningProcesses_v3")
        r = await read(d, uuid)
        assert (r.temperature_c, r.processes) == (None, ())
        assert r.watts is not None
        await d.close()


async def test_without_the_enforced_limit_call_a_set_stands_on_the_management_limit(
    gpus: list[SimulatedGpu], clock: ManualClock
) -> None:
    # An independent NVML (an older driver, a fake library) may lack the optional read-back
    # call: the set has been applied, and must not be reported as failed.
    with simulated_nvml(gpus, missing_functions={"nvmlDeviceGetEnforcedPowerLimit"}) as lib:
        d = make(clock)
        uuid = (await d.start())[0]
        assert await d.set_power_limit(uuid, 400) == 400.0
        assert gpus[0].limit_watts == 400 and d.limit_read_back(uuid) == "management"
        r = await read(d, uuid)
        assert (r.limit_watts, r.enforced_limit_watts, r.cap_settable) == (400, None, True)
        gpus[0].faults.ignore_set = True  # the management limit still catches an ignored set
        with pytest.raises(DeviceError) as caught:
            await d.set_power_limit(uuid, 300)
        assert caught.value.failure is Failure.IGNORED and "holds 400 W" in caught.value.detail
        gpus[0].faults.ignore_set = False
        lib.remove_function("nvmlDeviceGetPowerManagementLimit")
        assert await d.set_power_limit(uuid, 350) == 350.0  # nothing to read back: as asked
        assert gpus[0].limit_watts == 350 and d.limit_read_back(uuid) == "none"
        await d.close()


async def test_with_only_the_enforced_limit_readable_an_ignored_cut_is_caught(
    gpus: list[SimulatedGpu], clock: ManualClock
) -> None:
    with simulated_nvml(gpus, missing_functions={"nvmlDeviceGetPowerManagementLimit"}):
        d = make(clock)
        uuid = (await d.start())[0]
        gpus[0].set_system_cap(300)  # enforced below what is asked: applied, not ignored
        assert await d.set_power_limit(uuid, 500) == 300.0
        gpus[0].set_system_cap(None)
        gpus[0].faults.ignore_set = True
        with pytest.raises(DeviceError) as caught:
            await d.set_power_limit(uuid, 250)
        assert caught.value.failure is Failure.IGNORED and "enforces 500 W" in caught.value.detail
        await d.close()


async def test_no_permission_is_logged_once_and_the_card_is_driven_by_jobs(
    driver: NvmlGpus,
    gpus: list[SimulatedGpu],
    lib: SimulatedNvmlLib,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for gpu in gpus:
        gpu.faults.no_permission = True
    caplog.set_level(logging.WARNING, logger="wattshift.drivers.nvml_gpu")
    for _ in range(2):
        for gpu in gpus:
            with pytest.raises(DeviceError) as caught:
                await driver.set_power_limit(str(gpu.uuid), 300)
            assert caught.value.failure is Failure.REFUSED
            assert "run wattshift as root" in caught.value.detail
    errors = [r for r in caplog.records if "no permission" in r.getMessage()]
    assert len(errors) == 1 and "root" in errors[0].getMessage()
    assert lib.calls["nvmlDeviceSetPowerManagementLimit"] == 2  # once per card, never again
    assert [(await read(driver, str(g.uuid))).cap_settable for g in gpus] == [False, False]


async def test_invalid_argument_on_set_is_a_configuration_refusal(
    driver: NvmlGpus, gpus: list[SimulatedGpu], caplog: pytest.LogCaptureFixture
) -> None:
    gpus[0].faults.errors["nvmlDeviceSetPowerManagementLimit"] = pynvml.NVML_ERROR_INVALID_ARGUMENT
    with pytest.raises(DeviceError) as caught:
        await driver.set_power_limit(str(gpus[0].uuid), 300)
    assert caught.value.failure is Failure.REFUSED
    assert "InvalidArgument" in caught.value.detail
    assert not (await read(driver, str(gpus[0].uuid))).cap_settable
    assert any("refused 300 W as invalid" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("fault", ["lost", "reset_required"])
async def test_a_lost_card_is_quarantined_then_reprobed(
    driver: NvmlGpus,
    gpus: list[SimulatedGpu],
    lib: SimulatedNvmlLib,
    clock: ManualClock,
    fault: str,
) -> None:
    sick, well = str(gpus[0].uuid), str(gpus[1].uuid)
    setattr(gpus[0].faults, fault, True)
    err = await read_error(driver, sick)
    assert err.failure is Failure.NO_ANSWER and "quarantined" in err.detail
    assert isinstance((await driver.read_all())[well], GpuReading)
    with pytest.raises(DeviceError) as caught:
        await driver.set_power_limit(sick, 300)
    assert caught.value.failure is Failure.NO_ANSWER
    probes = lib.calls.get("nvmlDeviceGetHandleByUUID", 0)
    clock.advance(QUARANTINE_S - 1)
    await driver.read_all()
    assert lib.calls.get("nvmlDeviceGetHandleByUUID", 0) == probes  # left alone in quarantine
    clock.advance(1)
    err = await read_error(driver, sick)  # re-probed, still lost: the backoff doubles
    assert lib.calls["nvmlDeviceGetHandleByUUID"] == probes + 1
    assert "next try in 60 s" in err.detail
    setattr(gpus[0].faults, fault, False)
    clock.advance(59)
    assert (await driver.read_all())[sick] is err
    clock.advance(1)
    back = await read(driver, sick)
    assert back.watts == H100.idle_watts
    assert await driver.set_power_limit(sick, 300) == 300


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_UNKNOWN, pynvml.NVML_ERROR_TIMEOUT])
async def test_unknown_and_timeout_errors_retry_with_backoff(
    driver: NvmlGpus, gpus: list[SimulatedGpu], clock: ManualClock, code: int
) -> None:
    uuid = str(gpus[0].uuid)
    gpus[0].faults.errors["nvmlDeviceGetPowerUsage"] = code
    err = await read_error(driver, uuid)
    assert err.failure is Failure.TIMEOUT and f"next try in {RETRY_S:g} s" in err.detail
    clock.advance(RETRY_S)
    assert "next try in 4 s" in (await read_error(driver, uuid)).detail
    del gpus[0].faults.errors["nvmlDeviceGetPowerUsage"]
    clock.advance(4)
    assert (await read(driver, uuid)).watts == H100.idle_watts


async def test_a_hung_call_times_out_and_the_others_go_on(
    lib: SimulatedNvmlLib, gpus: list[SimulatedGpu], clock: ManualClock
) -> None:
    d = make(clock, timeout=0.3)
    await d.start()
    sick, well = str(gpus[0].uuid), str(gpus[1].uuid)
    gpus[0].faults.slow["nvmlDeviceGetPowerUsage"] = 600.0
    readings = await d.read_all()
    assert isinstance(readings[sick], DeviceError) and readings[sick].failure is Failure.TIMEOUT
    assert "did not return within 0.3 s" in readings[sick].detail
    assert isinstance(readings[well], GpuReading)  # on a fresh thread
    assert len(d._worker.abandoned) == 1
    assert await d.set_power_limit(well, 300) == 300
    gpus[0].faults.slow.clear()
    clock.advance(RETRY_S)
    assert isinstance((await d.read_all())[sick], GpuReading)
    await d.close()


@pytest.mark.parametrize("setting", [{"driver_loaded": False}, {"library_found": False}])
async def test_no_driver_on_the_host_is_said_plainly(
    clock: ManualClock, setting: dict[str, bool]
) -> None:
    with simulated_nvml([SimulatedGpu()], **setting):  # type: ignore[arg-type]
        d = make(clock)
        with pytest.raises(NvmlUnavailable, match="no NVIDIA driver on this host"):
            await d.start()
        await d.close()


async def test_a_card_lost_at_start_is_kept_by_uuid_and_found_by_index_later(
    lib: SimulatedNvmlLib, gpus: list[SimulatedGpu], clock: ManualClock
) -> None:
    gpus[1].faults.lost = True
    by_uuid = make(clock, [str(gpus[0].uuid), str(gpus[1].uuid)])
    assert await by_uuid.start() == [gpus[0].uuid, gpus[1].uuid]
    assert (await read_error(by_uuid, str(gpus[1].uuid))).failure is Failure.NO_ANSWER
    every = make(clock)
    assert await every.start() == [gpus[0].uuid]  # no UUID to key it by yet
    gpus[1].faults.lost = False
    clock.advance(QUARANTINE_S)
    assert set(await every.read_all()) == {gpus[0].uuid, gpus[1].uuid}
    assert (await read(by_uuid, str(gpus[1].uuid))).model == A100.name
    await by_uuid.close()
    await every.close()


async def test_restore_defaults(driver: NvmlGpus, gpus: list[SimulatedGpu]) -> None:
    await driver.set_power_limit(str(gpus[0].uuid), 300)
    await driver.set_power_limit(str(gpus[1].uuid), 200)
    done = await driver.restore_defaults()
    assert done == {gpus[0].uuid: 700.0, gpus[1].uuid: 400.0}
    assert [g.limit_watts for g in gpus] == [700, 400]
