"""NVML errors by class, mapped once to what the driver does about them (DESIGN.md, "GPUs
through NVML"). Pure: no calls, no state; the driver keeps the state."""

from __future__ import annotations

import enum

import pynvml

from wattshift.model.miner import Failure


class Remedy(enum.Enum):
    DISABLE_FIELD = "disable"  # this card cannot do that: stop asking, report None
    CONFIGURATION = "configuration"  # permission or a value the card refuses: alert the operator
    QUARANTINE = "quarantine"  # the card is gone: count it at max, re-probe after a backoff
    RETRY = "retry"  # transient: retry after a backoff
    NO_DRIVER = "no_driver"  # no NVIDIA driver on this host at all


_BY_CLASS: tuple[tuple[tuple[type[BaseException], ...], Remedy], ...] = (
    (
        (
            pynvml.NVMLError_NotSupported,
            pynvml.NVMLError_FunctionNotFound,
            # The unversioned wrappers turn FunctionNotFound into this (throwOnVersionMismatch).
            pynvml.NVMLLibraryMismatchError,
        ),
        Remedy.DISABLE_FIELD,
    ),
    ((pynvml.NVMLError_NoPermission, pynvml.NVMLError_InvalidArgument), Remedy.CONFIGURATION),
    (
        (
            pynvml.NVMLError_GpuIsLost,
            pynvml.NVMLError_ResetRequired,
            pynvml.NVMLError_NotFound,  # a UUID the driver no longer sees: fell off the bus
        ),
        Remedy.QUARANTINE,
    ),
    ((pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded), Remedy.NO_DRIVER),
)


def remedy_for(exc: BaseException) -> Remedy:
    """Unknown, Timeout and anything not listed (Uninitialized after a driver reload, a
    memory error...) are retried: a later call may well succeed."""
    for classes, remedy in _BY_CLASS:
        if isinstance(exc, classes):
            return remedy
    return Remedy.RETRY


def failure_for(remedy: Remedy) -> Failure:
    """The loop's vocabulary: a quarantined card is NO_ANSWER (counted at max)."""
    return {
        Remedy.DISABLE_FIELD: Failure.UNSUPPORTED,
        Remedy.CONFIGURATION: Failure.REFUSED,
        Remedy.QUARANTINE: Failure.NO_ANSWER,
        Remedy.RETRY: Failure.TIMEOUT,
        Remedy.NO_DRIVER: Failure.NO_ANSWER,
    }[remedy]


def describe(exc: BaseException) -> str:
    """``NVMLError_GpuIsLost: GPU is lost`` (the class name is what operators search for)."""
    return f"{type(exc).__name__}: {exc}"
