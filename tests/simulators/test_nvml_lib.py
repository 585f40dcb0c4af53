"""The simulated NVML library, read through the real binding: physics and faults."""

from __future__ import annotations

import re
import threading

import pynvml
import pytest
from simulated_gpus import ManualClock

from wattshift.simulators.gpu_physics import GPU_MODELS, SimulatedGpu, gpu_uuid
from wattshift.simulators.nvml_lib import simulated_nvml

H100 = GPU_MODELS["H100-SXM"]
RATE = (H100.max_watts - H100.idle_watts) / 1.0  # W/s with the default 1 s ramp


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gpu(clock: ManualClock) -> SimulatedGpu:
    return SimulatedGpu("H100-SXM", clock=clock)


def test_an_idle_card_draws_its_idle_watts(gpu: SimulatedGpu, clock: ManualClock) -> None:
    clock.advance(30)
    assert gpu.draw_watts() == H100.idle_watts


def test_draw_ramps_linearly_to_the_load_then_holds(gpu: SimulatedGpu, clock: ManualClock) -> None:
    gpu.set_job(1.0, pids=[100])
    clock.advance(0.5)
    assert gpu.draw_watts() == pytest.approx(H100.idle_watts + RATE * 0.5)
    clock.advance(0.6)
    assert gpu.draw_watts() == pytest.approx(H100.full_load_watts)
    gpu.set_job(0.5, pids=[100])
    clock.advance(5)
    assert gpu.draw_watts() == pytest.approx(
        H100.idle_watts + 0.5 * (H100.full_load_watts - H100.idle_watts)
    )


def test_the_cap_holds_draw_down_and_the_system_cap_wins_when_lower(
    gpu: SimulatedGpu, clock: ManualClock
) -> None:
    gpu.set_job(1.0)
    clock.advance(2)
    gpu.set_limit_watts(300)
    clock.advance(0.1)
    assert gpu.draw_watts() == pytest.approx(H100.full_load_watts - RATE * 0.1)  # still ramping
    clock.advance(1)
    assert gpu.draw_watts() == pytest.approx(300)
    gpu.set_system_cap(250)
    assert gpu.enforced_watts == 250
    clock.advance(1)
    assert gpu.draw_watts() == pytest.approx(250)


def test_energy_counter_integrates_the_ramp_exactly(gpu: SimulatedGpu, clock: ManualClock) -> None:
    before = gpu.energy_mj()
    gpu.set_job(1.0)
    clock.advance(3)
    ramp_s = (H100.full_load_watts - H100.idle_watts) / RATE
    joules = (H100.idle_watts + H100.full_load_watts) / 2 * ramp_s + H100.full_load_watts * (
        3 - ramp_s
    )
    assert (gpu.energy_mj() - before) / 1000 == pytest.approx(joules, abs=0.002)


def test_temperature_relaxes_towards_ambient_plus_k_watts(
    gpu: SimulatedGpu, clock: ManualClock
) -> None:
    start = gpu.temperature_c()
    gpu.set_job(1.0)
    seen = []
    for _ in range(20):
        clock.advance(10)
        seen.append(gpu.temperature_c())
    assert seen == sorted(seen) and seen[0] > start
    hot = gpu.ambient_c + H100.degrees_per_watt * H100.full_load_watts
    assert seen[-1] == pytest.approx(hot, abs=0.5)
    gpu.set_job(0.0)
    clock.advance(600)
    assert gpu.temperature_c() == pytest.approx(
        gpu.ambient_c + H100.degrees_per_watt * H100.idle_watts, abs=0.5
    )


def test_bad_model_and_load_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="model: unknown GPU model 'B200'"):
        SimulatedGpu("B200")
    with pytest.raises(ValueError, match="load: 1.5"):
        SimulatedGpu().set_job(1.5)


def test_uuids_look_real_and_repeat_for_a_seed() -> None:
    assert re.fullmatch(
        r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", gpu_uuid(3, 0)
    )
    assert gpu_uuid(3, 0) == gpu_uuid(3, 0) != gpu_uuid(4, 0) != gpu_uuid(3, 1)
    with simulated_nvml([SimulatedGpu(), SimulatedGpu()], seed=3) as lib:
        assert [g.uuid for g in lib.gpus] == [gpu_uuid(3, 0), gpu_uuid(3, 1)]


def test_the_binding_reads_the_physics_in_its_own_units(clock: ManualClock) -> None:
    gpus = [SimulatedGpu(key, clock=clock) for key in GPU_MODELS]
    gpus[0].set_job(1.0, pids=[11, 12, 13])
    clock.advance(5)
    with simulated_nvml(gpus, seed=1):
        pynvml.nvmlInit()
        try:
            assert pynvml.nvmlDeviceGetCount() == len(GPU_MODELS)
            for i, (gpu, spec) in enumerate(zip(gpus, GPU_MODELS.values(), strict=True)):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                assert pynvml.nvmlDeviceGetName(h) == spec.name
                assert pynvml.nvmlDeviceGetUUID(h) == gpu.uuid
                assert pynvml.nvmlDeviceGetPowerManagementLimitConstraints(h) == [
                    spec.min_watts * 1000,
                    spec.max_watts * 1000,
                ]
                assert pynvml.nvmlDeviceGetPowerUsage(h) == round(gpu.draw_watts() * 1000)
            h = pynvml.nvmlDeviceGetHandleByUUID(gpus[0].uuid)
            assert [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)] == [11, 12, 13]
            assert pynvml.nvmlDeviceGetUtilizationRates(h).gpu == 100
            assert pynvml.nvmlDeviceGetTemperatureV(h, pynvml.NVML_TEMPERATURE_GPU) == round(
                gpus[0].temperature_c()
            )
            pynvml.nvmlDeviceSetPowerManagementLimit(h, 450_000)
            assert pynvml.nvmlDeviceGetPowerManagementLimit(h) == 450_000
            assert gpus[0].limit_watts == 450
            with pytest.raises(pynvml.NVMLError_InvalidArgument):
                pynvml.nvmlDeviceSetPowerManagementLimit(h, 100_000)  # under the H100's 200 W
        finally:
            pynvml.nvmlShutdown()


@pytest.mark.parametrize(
    ("set_fault", "error"),
    [
        (lambda f: setattr(f, "lost", True), pynvml.NVMLError_GpuIsLost),
        (lambda f: setattr(f, "reset_required", True), pynvml.NVMLError_ResetRequired),
        (lambda f: f.not_supported.add("nvmlDeviceGetPowerUsage"), pynvml.NVMLError_NotSupported),
        (
            lambda f: f.errors.update(nvmlDeviceGetPowerUsage=pynvml.NVML_ERROR_UNKNOWN),
            pynvml.NVMLError_Unknown,
        ),
    ],
)
def test_faults_reach_the_caller_as_the_bindings_own_classes(set_fault, error) -> None:  # type: ignore[no-untyped-def]
    gpu = SimulatedGpu()
    with simulated_nvml([gpu, SimulatedGpu()]):
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        set_fault(gpu.faults)
        with pytest.raises(error):
            pynvml.nvmlDeviceGetPowerUsage(h)
        assert pynvml.nvmlDeviceGetPowerUsage(pynvml.nvmlDeviceGetHandleByIndex(1)) > 0
        pynvml.nvmlShutdown()


def test_no_permission_and_ignore_set() -> None:
    gpu = SimulatedGpu()
    with simulated_nvml([gpu]):
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        gpu.faults.no_permission = True
        with pytest.raises(pynvml.NVMLError_NoPermission):
            pynvml.nvmlDeviceSetPowerManagementLimit(h, 300_000)
        gpu.faults.no_permission, gpu.faults.ignore_set = False, True
        pynvml.nvmlDeviceSetPowerManagementLimit(h, 300_000)
        assert pynvml.nvmlDeviceGetPowerManagementLimit(h) == 700_000
        pynvml.nvmlShutdown()


def test_missing_driver_library_function_and_init() -> None:
    with (
        simulated_nvml([SimulatedGpu()], driver_loaded=False),
        pytest.raises(pynvml.NVMLError_DriverNotLoaded),
    ):
        pynvml.nvmlInit()
    with simulated_nvml([], library_found=False), pytest.raises(pynvml.NVMLError_LibraryNotFound):
        pynvml.nvmlInit()
    with simulated_nvml([SimulatedGpu()], missing_functions={"nvmlDeviceGetTemperatureV"}):
        with pytest.raises(pynvml.NVMLError_Uninitialized):
            pynvml.nvmlDeviceGetCount()
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        with pytest.raises(pynvml.NVMLError_FunctionNotFound):
            pynvml.nvmlDeviceGetTemperatureV(h, pynvml.NVML_TEMPERATURE_GPU)
        assert pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU) > 0
        pynvml.nvmlShutdown()


def test_a_slow_call_blocks_until_the_library_is_uninstalled() -> None:
    gpu = SimulatedGpu()
    gpu.faults.slow["nvmlDeviceGetPowerUsage"] = 600.0
    done = threading.Event()
    with simulated_nvml([gpu]) as lib:
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        thread = threading.Thread(
            target=lambda: (
                lib.nvmlDeviceGetPowerUsage(h, pynvml.byref(pynvml.c_uint())),
                done.set(),
            )
        )
        thread.start()
        assert not done.wait(0.2)  # still inside the call
    thread.join(timeout=10)
    assert done.is_set()


def test_everything_is_put_back_even_after_an_error() -> None:
    saved_lib, saved_cache = pynvml.nvmlLib, dict(pynvml._nvmlGetFunctionPointer_cache)
    saved_cdll = pynvml.CDLL
    with (
        pytest.raises(RuntimeError, match="boom"),
        simulated_nvml([SimulatedGpu()], library_found=False),
    ):
        raise RuntimeError("boom")
    with pytest.raises(ZeroDivisionError), simulated_nvml([SimulatedGpu()]) as lib:
        assert pynvml.nvmlLib is lib
        with pytest.raises(RuntimeError, match="already installed"), simulated_nvml([]):
            pass
        pynvml.nvmlInit()
        raise ZeroDivisionError
    assert pynvml.nvmlLib is saved_lib
    assert pynvml._nvmlGetFunctionPointer_cache == saved_cache
    assert pynvml.CDLL is saved_cdll
