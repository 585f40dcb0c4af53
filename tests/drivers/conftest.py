"""Fixtures for the driver tests: a simulated miner of each firmware in ``SIM_KINDS``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from simulated_miners import (
    LUXOS,
    SIM_KINDS,
    TEST_DEADLINES,
    SimKind,
    collect_pyasic_leftovers,
)

from wattshift.drivers.pyasic_miner import Deadlines
from wattshift.simulators.miner import SimulatedMiner


@pytest.fixture(params=SIM_KINDS, ids=lambda kind: kind.firmware)
def kind(request: pytest.FixtureRequest) -> SimKind:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def luxos() -> SimKind:
    return LUXOS


@pytest.fixture
def deadlines() -> Deadlines:
    return TEST_DEADLINES


@pytest.fixture
async def sim(kind: SimKind) -> AsyncIterator[SimulatedMiner]:
    miner = kind.build()
    await miner.start()
    try:
        yield miner
    finally:
        await miner.stop()
        await collect_pyasic_leftovers()
