"""The blocking side of the NVML driver: what runs on its worker thread, and nothing else.

Each function here calls the binding (``pynvml``) directly and may block for seconds on a sick
card; :class:`~.nvml_gpu.NvmlGpus` runs them on its dedicated thread under a deadline and owns
everything asynchronous (quarantine, backoff, deadlines). Fields a card cannot give come back
``None`` and are named in ``unsupported``, so they are not asked again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pynvml

from wattshift.model.gpu import GpuLimits

from .nvml_failures import Remedy, remedy_for


@dataclass
class FieldValues:
    """What one job on the worker brings back: values, plus fields found unsupported."""

    values: dict[str, Any]
    unsupported: set[str]


def nvml_str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def optional(name: str, skip: frozenset[str], unsupported: set[str], fn: Callable[[], Any]) -> Any:
    """One field: ``None`` if the card cannot give it (and remember that). GpuIsLost,
    Unknown and the rest propagate: they are about the card, not the field."""
    if name in skip:
        return None
    try:
        return fn()
    except pynvml.NVMLError as exc:
        if remedy_for(exc) is not Remedy.DISABLE_FIELD:
            raise
    except pynvml.NVMLLibraryMismatchError:
        pass
    unsupported.add(name)
    return None


def card_limits(handle: Any, skip: frozenset[str], unsupported: set[str]) -> GpuLimits | None:
    low_high = optional(
        "limits",
        skip,
        unsupported,
        lambda: pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle),
    )
    if low_high is None:
        return None
    default = optional(
        "default_limit",
        skip,
        unsupported,
        lambda: pynvml.nvmlDeviceGetPowerManagementDefaultLimit(handle),
    )
    low, high = low_high
    return GpuLimits(low / 1000, high / 1000, (default if default is not None else high) / 1000)


def probe(item: int | str) -> dict[str, Any]:
    """Handle, UUID, index, model and constraints of one GPU, by index or by UUID."""
    if isinstance(item, int):
        handle = pynvml.nvmlDeviceGetHandleByIndex(item)
    else:
        handle = pynvml.nvmlDeviceGetHandleByUUID(item)
    unsupported: set[str] = set()
    skip: frozenset[str] = frozenset()
    uuid = nvml_str(pynvml.nvmlDeviceGetUUID(handle))
    index = optional("index", skip, unsupported, lambda: pynvml.nvmlDeviceGetIndex(handle))
    model = optional("model", skip, unsupported, lambda: pynvml.nvmlDeviceGetName(handle))
    return {
        "uuid": uuid,
        "handle": handle,
        "index": item if isinstance(item, int) else (index if index is not None else -1),
        "model": None if model is None else nvml_str(model),
        "limits": card_limits(handle, skip, unsupported),
        "unsupported": unsupported,
    }


def temperature(handle: Any, skip: frozenset[str], unsupported: set[str]) -> float | None:
    # nvmlDeviceGetTemperature is deprecated; the V form is missing from older bindings and
    # drivers, so fall back to the old one rather than lose the reading.
    if hasattr(pynvml, "nvmlDeviceGetTemperatureV"):
        value = optional(
            "temperature_v",
            skip,
            unsupported,
            lambda: pynvml.nvmlDeviceGetTemperatureV(handle, pynvml.NVML_TEMPERATURE_GPU),
        )
        if value is not None:
            return float(value)
    else:
        unsupported.add("temperature_v")
    value = optional(
        "temperature",
        skip,
        unsupported,
        lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
    )
    return None if value is None else float(value)


def read_fields(handle: Any, skip: frozenset[str]) -> FieldValues:
    unsupported: set[str] = set()

    def get(name: str, fn: Callable[[], Any]) -> Any:
        return optional(name, skip, unsupported, fn)

    values: dict[str, Any] = {
        "watts": get("watts", lambda: pynvml.nvmlDeviceGetPowerUsage(handle)),
        "limit": get("limit", lambda: pynvml.nvmlDeviceGetPowerManagementLimit(handle)),
        "enforced_limit": get(
            "enforced_limit", lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle)
        ),
        "energy": get("energy", lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)),
    }
    util = get("utilisation", lambda: pynvml.nvmlDeviceGetUtilizationRates(handle))
    values["utilisation"] = None if util is None else float(util.gpu)
    values["temperature"] = temperature(handle, skip, unsupported)
    procs = get("processes", lambda: pynvml.nvmlDeviceGetComputeRunningProcesses(handle))
    values["processes"] = () if procs is None else tuple(int(p.pid) for p in procs)
    return FieldValues(values, unsupported)


@dataclass
class ReadBack:
    """What a card holds after a set: the management limit and the enforced one, each
    ``None`` where the card (or the library) cannot say."""

    held_mw: int | None
    enforced_mw: int | None
    unsupported: set[str]


def set_and_read_back(handle: Any, milliwatts: int, skip: frozenset[str]) -> ReadBack:
    """Set the limit, then read it back. The set's own error propagates; the read-backs are
    optional fields: a library without ``nvmlDeviceGetEnforcedPowerLimit`` has still applied
    the set, and must not turn it into a failure."""
    pynvml.nvmlDeviceSetPowerManagementLimit(handle, milliwatts)
    unsupported: set[str] = set()
    held = optional(
        "limit", skip, unsupported, lambda: pynvml.nvmlDeviceGetPowerManagementLimit(handle)
    )
    enforced = optional(
        "enforced_limit", skip, unsupported, lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle)
    )
    return ReadBack(
        None if held is None else int(held), None if enforced is None else int(enforced), unsupported
    )
