"""The private parts of nvidia-ml-py that the simulated NVML library stands on.

simulators/nvml_lib.py replaces ``pynvml.nvmlLib`` and relies on how the binding finds and
calls its C functions. If one of these tests fails after an upgrade of nvidia-ml-py, the
simulator (and perhaps the driver) must be updated before the pin in pyproject.toml moves.
"""

from __future__ import annotations

import ctypes
import inspect
import re
from importlib.metadata import version

import pynvml
import pytest

from wattshift.simulators.nvml_lib import SimulatedNvmlLib

UPDATE = (
    "nvidia-ml-py {installed} changed {what}: update simulators/nvml_lib.py (and "
    "drivers/nvml_gpu.py if it uses it), then the nvidia-ml-py pin in pyproject.toml"
)
PINNED_MAJOR = 13


def fail_if(condition: bool, what: str) -> None:
    if condition:
        pytest.fail(UPDATE.format(installed=version("nvidia-ml-py"), what=what), pytrace=False)


def test_the_major_version_is_the_one_the_simulator_was_written_for() -> None:
    installed = version("nvidia-ml-py")
    fail_if(
        int(installed.split(".")[0]) != PINNED_MAJOR, f"its major version (want {PINNED_MAJOR}.x)"
    )


def test_the_library_slot_the_cache_and_the_loader() -> None:
    for name in ("nvmlLib", "_nvmlGetFunctionPointer_cache", "libLoadLock", "_nvmlLib_refcount"):
        fail_if(not hasattr(pynvml, name), f"the module attribute {name}")
    fail_if(not isinstance(pynvml._nvmlGetFunctionPointer_cache, dict), "the function cache type")
    lookup = inspect.getsource(pynvml._nvmlGetFunctionPointer)
    fail_if(
        "getattr(nvmlLib, name)" not in lookup, "how _nvmlGetFunctionPointer finds a C function"
    )
    fail_if("AttributeError" not in lookup, "what a missing C function raises")
    loader = inspect.getsource(pynvml._LoadNvmlLibrary)
    fail_if("if (nvmlLib == None)" not in loader, "when _LoadNvmlLibrary loads the .so")
    fail_if("CDLL(" not in loader or pynvml.CDLL is not ctypes.CDLL, "how the .so is opened")
    fail_if("_LoadNvmlLibrary()" not in inspect.getsource(pynvml.nvmlInitWithFlags), "nvmlInit")


def test_the_error_classes_the_driver_sorts_by() -> None:
    for name in (
        "NotSupported",
        "FunctionNotFound",
        "NoPermission",
        "InvalidArgument",
        "GpuIsLost",
        "ResetRequired",
        "Unknown",
        "Timeout",
        "LibraryNotFound",
        "DriverNotLoaded",
        "Uninitialized",
        "NotFound",
        "InsufficientSize",
        "ArgumentVersionMismatch",
    ):
        cls = getattr(pynvml, f"NVMLError_{name}", None)
        fail_if(cls is None or not issubclass(cls, pynvml.NVMLError), f"the class NVMLError_{name}")
    fail_if(not hasattr(pynvml, "NVMLLibraryMismatchError"), "NVMLLibraryMismatchError")


def test_every_c_function_the_simulator_plays_is_called_by_that_name() -> None:
    source = inspect.getsource(pynvml)
    called = set(re.findall(r'_nvmlGetFunctionPointer\("(\w+)"\)', source))
    played = {name[1:] for name in dir(SimulatedNvmlLib) if name.startswith("_nvml")}
    fail_if(
        bool(played - called), f"the C names it calls (no longer called: {sorted(played - called)})"
    )


@pytest.mark.parametrize(
    ("function", "fragment"),
    [
        # The simulator fills these out-parameters in place, as passed here.
        ("nvmlDeviceGetHandleByIndex", "fn(c_index, byref(device))"),
        ("nvmlDeviceGetPowerUsage", "fn(handle, byref(c_watts))"),
        ("nvmlDeviceGetTemperatureV1", "fn(handle, byref(c_temp))"),
        ("nvmlDeviceGetComputeRunningProcesses_v3", "fn(handle, byref(c_count), None)"),
        # DESIGN.md: the setter must check its return code (the _v2 one does not in 13.615.71).
        ("nvmlDeviceSetPowerManagementLimit", "_nvmlCheckReturn(ret)"),
    ],
)
def test_how_the_binding_passes_arguments(function: str, fragment: str) -> None:
    fail_if(
        fragment not in inspect.getsource(getattr(pynvml, function)), f"{function}: no {fragment!r}"
    )


def test_structures_and_ctypes_details() -> None:
    fields = {
        pynvml.c_nvmlTemperature_v1_t: {"version", "sensorType", "temperature"},
        pynvml.c_nvmlUtilization_t: {"gpu", "memory"},
        pynvml.c_nvmlProcessInfo_v3_t: {
            "pid",
            "usedGpuMemory",
            "gpuInstanceId",
            "computeInstanceId",
        },
    }
    for struct, names in fields.items():
        have = {f[0] for f in struct._fields_}
        fail_if(not names <= have, f"the fields of {struct.__name__} (have {sorted(have)})")
    fail_if(not hasattr(pynvml, "nvmlTemperature_v1"), "nvmlTemperature_v1")
    # byref() hands the simulator a CArgObject; it reaches the target through ``_obj``.
    target = ctypes.c_uint()
    fail_if(getattr(ctypes.byref(target), "_obj", None) is not target, "(CPython) byref()._obj")
