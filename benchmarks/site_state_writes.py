"""What saving miners' on/off changes costs the loop, beside the journal rows of the same switches.

Each miner a batch of commands switches between on and off costs one upserted row in the state
file (``SiteState.switches_saved``: one transaction, one fsync, for the whole batch); the same
switches already cost the journal two rows each, a command and its result (``record_many``,
also one transaction). Both are timed here on the same disk, in the same run, for a batch of 1,
100 and 10,000 miners (a whole fleet switched at once). A tick that switches no miner writes
nothing to the state file.

    python benchmarks/site_state_writes.py [--repeat 5] [--dir /var/lib/wattshift]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from wattshift.daemon.control.memory import Switched
from wattshift.daemon.journal.entries import EntryKind, NewEntry
from wattshift.daemon.journal.store import Journal
from wattshift.daemon.runtime.site_state import SiteState

T = TypeVar("T")


def timed(write: Callable[[T], object], arg: T, repeat: int) -> float:
    """The median of ``repeat`` runs of ``write(arg)``, in milliseconds."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        write(arg)
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        state, journal = SiteState(Path(tmp) / "state.sqlite3"), Journal(Path(tmp) / "journal.sqlite3")
        print(f"{'miners switched':>16} {'state file ms':>14} {'journal ms (2 rows each)':>25}")
        for n in (1, 100, 10_000):
            ids = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(n)]
            now = datetime.now(UTC)
            switches = {d: Switched(i % 2 == 0, now) for i, d in enumerate(ids)}
            rows = [NewEntry(kind, f"{d}: sleep: ok", d, {"ok": True})
                    for d in ids for kind in (EntryKind.COMMAND, EntryKind.RESULT)]
            saved = timed(state.switches_saved, switches, args.repeat)
            journaled = timed(journal.record_many, rows, args.repeat)
            print(f"{n:>16,} {saved:>14.1f} {journaled:>25.1f}")
        state.close()
        journal.close()


if __name__ == "__main__":
    main()
