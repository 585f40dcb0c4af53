"""Where a policy decides: on the event loop, or in a worker thread for one that plans."""

from __future__ import annotations

import asyncio

from wattshift.model.snapshot import SiteSnapshot
from wattshift.policies.base import Allocation, Policy, forecast_seconds


async def decide(policy: Policy, snapshot: SiteSnapshot) -> Allocation:
    """``policy.decide(snapshot)``; a planning policy's (``forecast_seconds``) in a worker thread.

    A plan is a solver run of up to the policy's time budget (seconds, where merit-order takes
    milliseconds). HiGHS releases the GIL while it solves, so off the event loop the daemon keeps
    taking commands, serving metrics and reading the broker meanwhile. The tick holds the
    actuation lock while it decides, so no other decision (a fast shed) runs beside it."""
    if forecast_seconds(policy) > 0:
        return await asyncio.to_thread(policy.decide, snapshot)
    return policy.decide(snapshot)
