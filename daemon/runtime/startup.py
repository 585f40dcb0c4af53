"""Identifying the miners at start: a progress line every few seconds and one summary.

A site of 10,000 miners must not write 10,000 lines to the journal before it does anything:
the miner-by-miner detail is at DEBUG (``wattshift.drivers.pyasic_fleet``); what an operator
reads at INFO is how far identification has got, then what was found (per firmware and model),
what did not answer (per failure, a few addresses named) and how long it took.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 5.0
NAMED_FAILURES = 5  # addresses named per kind of failure in the summary; the rest are counted


class Identifiable(Protocol):
    """What start-up needs from the miner fleet (wattshift.drivers.pyasic_fleet.MinerFleet)."""

    @property
    def device_ids(self) -> list[str]: ...

    def driver(self, device_id: str) -> Any: ...

    async def discover(self) -> Mapping[str, Any]: ...


async def identify_miners(
    fleet: Identifiable, *, every_s: float = PROGRESS_SECONDS, clock: Callable[[], float] = time.monotonic
) -> Mapping[str, Any]:
    """``fleet.discover()``, with a progress line every ``every_s`` seconds and a summary."""
    started = clock()
    ids = fleet.device_ids
    task = asyncio.ensure_future(fleet.discover())
    try:
        while not (await asyncio.wait({task}, timeout=every_s))[0]:
            known = sum(1 for d in ids if fleet.driver(d) is not None)
            log.info("identifying miners: %s of %s identified so far (%.0f%%), %.0f s",
                     f"{known:,}", f"{len(ids):,}", 100 * known / max(len(ids), 1), clock() - started)
    finally:
        task.cancel()  # only if we are cancelled ourselves: otherwise it is done
    found = task.result()
    log.info("%s", summary(found, clock() - started))
    return found


def summary(found: Mapping[str, Any], seconds: float) -> str:
    """"identified 9,980 of 10,000 miners in 41 s: 5,000 luxos Antminer S21, ...; 20 did not
    answer: no_answer 15 (10.0.0.1, ...), timeout 5 (...)"."""
    kinds: Counter[str] = Counter()
    failed: dict[str, list[str]] = {}
    for device_id, result in found.items():
        failure = getattr(result, "failure", None)
        if failure is not None:  # a DeviceError
            failed.setdefault(str(failure), []).append(device_id)
        else:
            kinds[f"{result.firmware} {result.model or 'unknown model'}"] += 1
    identified = sum(kinds.values())
    line = f"identified {identified:,} of {len(found):,} miners in {seconds:.1f} s"
    if kinds:
        line += ": " + ", ".join(f"{n:,} {kind}" for kind, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
    if failed:
        parts = []
        for failure, ids in sorted(failed.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            named = ", ".join(ids[:NAMED_FAILURES]) + (", ..." if len(ids) > NAMED_FAILURES else "")
            parts.append(f"{failure} {len(ids):,} ({named})")
        line += f"; {len(found) - identified:,} not identified: " + ", ".join(parts)
    return line
