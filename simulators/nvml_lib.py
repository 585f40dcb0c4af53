"""A simulated NVML C library under the real ``nvidia-ml-py`` binding.

The binding (module ``pynvml``) loads ``libnvidia-ml.so.1`` into ``pynvml.nvmlLib`` and looks
every C entry point up on it by name (``_nvmlGetFunctionPointer``, cached in
``_nvmlGetFunctionPointer_cache``). :func:`simulated_nvml` puts a :class:`SimulatedNvmlLib` in
that slot instead: its attributes play the C functions, filling the ctypes out-parameters the
binding passes (``byref(c_uint())``, string buffers, structures, arrays) and returning NVML
status codes. The binding's own Python code therefore runs unchanged, and a failure reaches
the caller as the binding's genuine ``NVMLError_*`` class.

This relies on private names of the binding (pinned in pyproject; checked by
``tests/drivers/test_nvml_contract.py``). One simulated library per process at a time: the
binding's state is module-global.

Usage (a site of N nodes x 8 GPUs shares one library; each node's driver manages its 8 UUIDs)::

    gpus = [SimulatedGpu("H100-SXM", clock=clock) for _ in range(n_nodes * 8)]
    with simulated_nvml(gpus, seed=7) as lib:
        node0 = NvmlGpus([g.uuid for g in gpus[0:8]])
        gpus[3].set_job(0.9, pids=[4242])
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pynvml

from .gpu_physics import GPU_MODELS, GpuFaults, GpuSpec, SimulatedGpu, gpu_uuid

__all__ = [
    "GPU_MODELS",
    "GpuFaults",
    "GpuSpec",
    "SimulatedGpu",
    "SimulatedNvmlLib",
    "gpu_uuid",
    "simulated_nvml",
]

# Calls that work before nvmlInit (the rest answer NVML_ERROR_UNINITIALIZED, as the real one).
_NO_INIT_NEEDED = {"nvmlInitWithFlags", "nvmlErrorString"}


def _target(arg: Any) -> Any:
    """The ctypes object behind an argument: ``byref(x)`` arrives as a CArgObject whose
    ``_obj`` is ``x``; arrays, buffers and plain ``c_uint(...)`` arrive as themselves."""
    return getattr(arg, "_obj", arg)


def _value(arg: Any) -> Any:
    return getattr(arg, "value", arg)


def _put_string(buffer: Any, size: Any, text: str) -> int:
    raw = text.encode()
    if len(raw) + 1 > int(_value(size)):
        return pynvml.NVML_ERROR_INSUFFICIENT_SIZE
    buffer.value = raw
    return pynvml.NVML_SUCCESS


class _CFunction:
    """One C entry point. A callable object rather than a bound method, because the binding
    sets ``restype`` on some (``nvmlErrorString``) and a bound method refuses attributes."""

    def __init__(self, lib: SimulatedNvmlLib, name: str, impl: Callable[..., int]) -> None:
        self._lib = lib
        self.__name__ = name
        self._impl = impl
        self.restype: Any = ctypes.c_int
        self.argtypes: Any = None

    def __call__(self, *args: Any) -> Any:
        return self._lib._dispatch(self.__name__, self._impl, args)


class SimulatedNvmlLib:
    """Plays ``libnvidia-ml.so.1`` for the GPUs it is given (their order is their index)."""

    def __init__(
        self,
        gpus: Sequence[SimulatedGpu],
        *,
        seed: int | str = 0,
        driver_loaded: bool = True,
        driver_version: str = "570.133.20",
        missing_functions: Iterable[str] = (),
    ) -> None:
        self.gpus = list(gpus)
        for number, gpu in enumerate(self.gpus):
            if gpu.uuid is None:
                gpu.uuid = gpu_uuid(seed, number)
        uuids = [gpu.uuid for gpu in self.gpus]
        if len(set(uuids)) != len(uuids):
            raise ValueError("gpus: two simulated GPUs share a UUID")
        self.driver_loaded = driver_loaded
        self.driver_version = driver_version
        self.missing_functions = set(missing_functions)
        self.calls: dict[str, int] = {}  # C function -> times called (tests read this)
        self._init_count = 0
        self._lock = threading.Lock()
        # Set when the library is uninstalled: a slow call stops sleeping, so no test waits
        # for an abandoned worker thread.
        self.released = threading.Event()
        # Handles are pointers to real structures we keep alive; the address finds the GPU.
        self._structs = [pynvml.struct_c_nvmlDevice_t() for _ in self.gpus]
        self._by_address = {
            ctypes.addressof(s): g for s, g in zip(self._structs, self.gpus, strict=True)
        }
        self._entries = {
            name[1:]: _CFunction(self, name[1:], getattr(self, name))
            for name in dir(type(self))
            if name.startswith("_nvml")
        }

    # --- plumbing -----------------------------------------------------------------------------

    def __getattr__(self, name: str) -> _CFunction:
        # Only called for names not found normally: the C symbols.
        entries = self.__dict__.get("_entries", {})
        if name in entries and name not in self.__dict__.get("missing_functions", ()):
            return entries[name]
        raise AttributeError(name)  # the binding turns this into NVMLError_FunctionNotFound

    def gpu(self, uuid: str) -> SimulatedGpu:
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
        raise KeyError(uuid)

    def _handle_gpu(self, handle: Any) -> SimulatedGpu | None:
        try:
            return self._by_address.get(ctypes.addressof(handle.contents))
        except (ValueError, AttributeError):  # NULL pointer or not a pointer
            return None

    def _dispatch(self, name: str, impl: Callable[..., int], args: tuple[Any, ...]) -> Any:
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            if name not in _NO_INIT_NEEDED and self._init_count == 0:
                return pynvml.NVML_ERROR_UNINITIALIZED
        gpu = self._handle_gpu(args[0]) if name.startswith("nvmlDevice") and args else None
        if gpu is not None:
            faults = gpu.faults
            delay = faults.slow.get(name, faults.slow.get("*", 0.0))
            if delay > 0:
                self.released.wait(delay)  # a sick GPU: the call blocks, lock not held
            code = self._fault_code(name, faults)
            if code is not None:
                return code
        try:
            return impl(*args)
        except _InvalidArgument:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT

    @staticmethod
    def _fault_code(name: str, faults: GpuFaults) -> int | None:
        if faults.lost:
            return pynvml.NVML_ERROR_GPU_IS_LOST
        if faults.reset_required:
            return pynvml.NVML_ERROR_RESET_REQUIRED
        if name in faults.errors:
            return faults.errors[name]
        if name in faults.not_supported:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        return None

    def _device(self, handle: Any) -> SimulatedGpu:
        gpu = self._handle_gpu(handle)
        if gpu is None:
            raise _InvalidArgument
        return gpu

    # --- system -------------------------------------------------------------------------------

    def _nvmlInitWithFlags(self, flags: Any) -> int:
        if not self.driver_loaded:
            return pynvml.NVML_ERROR_DRIVER_NOT_LOADED
        with self._lock:
            self._init_count += 1
        return pynvml.NVML_SUCCESS

    def _nvmlShutdown(self) -> int:
        with self._lock:
            if self._init_count == 0:
                return pynvml.NVML_ERROR_UNINITIALIZED
            self._init_count -= 1
        return pynvml.NVML_SUCCESS

    def _nvmlErrorString(self, result: Any) -> bytes:
        code = int(_value(result))
        return pynvml.NVMLError._errcode_to_string.get(code, f"Unknown error {code}").encode()

    def _nvmlSystemGetDriverVersion(self, buffer: Any, size: Any) -> int:
        return _put_string(buffer, size, self.driver_version)

    def _nvmlDeviceGetCount_v2(self, count: Any) -> int:
        _target(count).value = len(self.gpus)
        return pynvml.NVML_SUCCESS

    def _nvmlDeviceGetHandleByIndex_v2(self, index: Any, device: Any) -> int:
        i = int(_value(index))
        if not 0 <= i < len(self.gpus):
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        return self._give_handle(i, device)

    def _nvmlDeviceGetHandleByUUID(self, uuid: Any, device: Any) -> int:
        wanted = _value(uuid)
        wanted = wanted.decode() if isinstance(wanted, bytes) else str(wanted)
        for i, gpu in enumerate(self.gpus):
            if gpu.uuid == wanted:
                return self._give_handle(i, device)
        return pynvml.NVML_ERROR_NOT_FOUND

    def _give_handle(self, i: int, device: Any) -> int:
        code = self._fault_code("nvmlDeviceGetHandle", self.gpus[i].faults)
        if code is not None:
            return code
        _target(device).contents = self._structs[i]
        return pynvml.NVML_SUCCESS

    # --- one device ---------------------------------------------------------------------------

    def _nvmlDeviceGetIndex(self, handle: Any, index: Any) -> int:
        _target(index).value = self.gpus.index(self._device(handle))
        return pynvml.NVML_SUCCESS

    def _nvmlDeviceGetUUID(self, handle: Any, buffer: Any, size: Any) -> int:
        return _put_string(buffer, size, str(self._device(handle).uuid))

    def _nvmlDeviceGetName(self, handle: Any, buffer: Any, size: Any) -> int:
        return _put_string(buffer, size, self._device(handle).spec.name)

    def _nvmlDeviceGetPowerUsage(self, handle: Any, milliwatts: Any) -> int:
        _target(milliwatts).value = round(self._device(handle).draw_watts() * 1000)
        return pynvml.NVML_SUCCESS

    def _nvmlDeviceGetTotalEnergyConsumption(self, handle: Any, millijoules: Any) -> int:
        _target(millijoules).value = self._device(handle).energy_mj()
        return pynvml.NVML_SUCCESS

    def _nvmlDeviceGetPowerManagementLimit(self, handle: Any, limit: Any) -> int:
        _target(limit).value = round(self._device(handle).limit_watts * 1000)
        return pynvml.NVML_SUCCESS

    def _nvmlDeviceGetEnforcedPowerLimit(self, handle: Any, limit: Any) -> int:
        _target(limit).value = round(self._device(handle).enforced_watts * 1000)
        return pynvml.NVML_SUCCESS

    def _nvmlDeviceGetPowerManagementDefaultLimit(self, handle: Any, limit: Any) -> int:
        _target(limit).value = round(self._device(handle).spec.default_watts * 1000)
        return pynvml.NVML_SUCCESS

    def _nvmlDeviceGetPowerManagementLimitConstraints(
        self, handle: Any, low: Any, high: Any
    ) -> int:
        spec = self._device(handle).spec
        _target(low).value = round(spec.min_watts * 1000)
        _target(high).value = round(spec.max_watts * 1000)
        return pynvml.NVML_SUCCESS

    def _nvmlDeviceSetPowerManagementLimit(self, handle: Any, limit: Any) -> int:
        gpu = self._device(handle)
        if gpu.faults.no_permission:
            return pynvml.NVML_ERROR_NO_PERMISSION
        milliwatts = int(_value(limit))
        spec = gpu.spec
        if not spec.min_watts * 1000 <= milliwatts <= spec.max_watts * 1000:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        if not gpu.faults.ignore_set:
            gpu.set_limit_watts(milliwatts / 1000)
        gpu.faults.errors.update(gpu.faults.errors_after_set)
        gpu.faults.errors_after_set.clear()
        return pynvml.NVML_SUCCESS

    def _nvmlDeviceGetUtilizationRates(self, handle: Any, utilization: Any) -> int:
        busy, memory = self._device(handle).utilisation_pct()
        out = _target(utilization)
        out.gpu, out.memory = busy, memory
        return pynvml.NVML_SUCCESS

    def _nvmlDeviceGetTemperatureV(self, handle: Any, temperature: Any) -> int:
        out = _target(temperature)
        if out.version != pynvml.nvmlTemperature_v1:
            return pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        if out.sensorType != pynvml.NVML_TEMPERATURE_GPU:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        out.temperature = round(self._device(handle).temperature_c())
        return pynvml.NVML_SUCCESS

    def _nvmlDeviceGetTemperature(self, handle: Any, sensor: Any, temperature: Any) -> int:
        if int(_value(sensor)) != pynvml.NVML_TEMPERATURE_GPU:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        _target(temperature).value = round(self._device(handle).temperature_c())
        return pynvml.NVML_SUCCESS

    def _nvmlDeviceGetComputeRunningProcesses_v3(self, handle: Any, count: Any, infos: Any) -> int:
        gpu = self._device(handle)
        pids = gpu.pids
        room = _target(count)
        # The binding asks with a count of 0 first, then again with an array of that size.
        if infos is None or room.value < len(pids):
            room.value = len(pids)
            return pynvml.NVML_ERROR_INSUFFICIENT_SIZE if pids else pynvml.NVML_SUCCESS
        share = gpu.spec.memory_bytes // 2 // max(1, len(pids))
        for slot, pid in zip(infos, pids, strict=False):  # the array is oversized
            slot.pid = pid
            slot.usedGpuMemory = share
            slot.gpuInstanceId = 0xFFFFFFFF
            slot.computeInstanceId = 0xFFFFFFFF
        room.value = len(pids)
        return pynvml.NVML_SUCCESS

    # --- installing under the binding ---------------------------------------------------------

    @contextmanager
    def installed(self, *, library_found: bool = True) -> Iterator[SimulatedNvmlLib]:
        """Put this library where the binding looks for the C one; put everything back after.

        ``library_found=False`` plays a host with no ``libnvidia-ml.so.1``: the binding's own
        loader runs and fails as it would there (NVMLError_LibraryNotFound)."""
        with pynvml.libLoadLock:
            if isinstance(pynvml.nvmlLib, SimulatedNvmlLib):
                raise RuntimeError("a simulated NVML library is already installed")
            saved = (
                pynvml.nvmlLib,
                dict(pynvml._nvmlGetFunctionPointer_cache),
                pynvml._nvmlLib_refcount,
                pynvml.CDLL,
            )
            pynvml._nvmlGetFunctionPointer_cache.clear()
            pynvml._nvmlLib_refcount = 0
            if library_found:
                pynvml.nvmlLib = self
            else:
                pynvml.nvmlLib = None
                pynvml.CDLL = _no_library
        try:
            yield self
        finally:
            self.released.set()
            with pynvml.libLoadLock:
                (
                    pynvml.nvmlLib,
                    cache,
                    pynvml._nvmlLib_refcount,
                    pynvml.CDLL,
                ) = saved
                pynvml._nvmlGetFunctionPointer_cache.clear()
                pynvml._nvmlGetFunctionPointer_cache.update(cache)

    def remove_function(self, name: str) -> None:
        """From now on the library lacks ``name`` (an older driver): NVMLError_FunctionNotFound."""
        self.missing_functions.add(name)
        pynvml._nvmlGetFunctionPointer_cache.pop(name, None)


class _InvalidArgument(Exception):
    """A handle that is not one of ours: answered as NVML_ERROR_INVALID_ARGUMENT."""


def _no_library(*_args: Any, **_kwargs: Any) -> Any:
    raise OSError("libnvidia-ml.so.1: cannot open shared object file (simulated host)")


@contextmanager
def simulated_nvml(
    gpus: Sequence[SimulatedGpu],
    *,
    seed: int | str = 0,
    driver_loaded: bool = True,
    library_found: bool = True,
    missing_functions: Iterable[str] = (),
) -> Iterator[SimulatedNvmlLib]:
    """Run the real binding over simulated GPUs for the duration of the block."""
    lib = SimulatedNvmlLib(
        gpus, seed=seed, driver_loaded=driver_loaded, missing_functions=missing_functions
    )
    with lib.installed(library_found=library_found):
        yield lib
