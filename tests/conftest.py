"""Suite-wide hygiene."""

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="module")
def collect_orphans() -> Iterator[None]:
    """pyasic's identification leaves orphan tasks behind when a miner answers garbage; their
    "exception never retrieved" is logged when they are collected. Collect them while the
    module's log capture is still open, not at interpreter exit onto a closed stream."""
    yield
    gc.collect()
