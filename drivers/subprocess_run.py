"""Run a program off the event loop with a deadline, and leave nothing behind when it hangs.

Both job runners shell out (the Slurm CLI, operator commands). A scheduler command can hang on
a dead controller or a stuck API server; the loop must not wait past its deadline, and a killed
command must not leave its children running. Every program therefore starts in its own session
(its own process group), and on timeout the whole group is killed and reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def said(self) -> str:
        """What the program said about its failure: stderr, else stdout, else its exit status."""
        text = self.stderr.strip() or self.stdout.strip()
        return text if text else f"exit status {self.returncode}"


class CommandTimeout(Exception):
    """The program did not finish within its deadline; its process group was killed."""


async def run_program(
    argv: Sequence[str],
    *,
    timeout_seconds: float,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Completed:
    """Run ``argv`` (no shell) and return what it printed; raise on timeout or a missing binary.

    Raises :class:`FileNotFoundError` when the program is not installed and
    :class:`CommandTimeout` when it runs past ``timeout_seconds`` (its group is killed first).
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None,
        start_new_session=True,  # its own process group: a timeout kills its children too
    )
    data = stdin.encode() if stdin is not None else None
    try:
        async with asyncio.timeout(timeout_seconds):
            out, err = await proc.communicate(data)
    except TimeoutError:
        _kill_group(proc.pid)
        # Reap it; the pipes may stay open if a child escaped the group, so do not read them.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await proc.wait()
        raise CommandTimeout(f"{argv[0]}: no answer within {timeout_seconds:g} s (killed)") from None
    except BaseException:
        # Cancelled by the caller: the same clean-up, then let the cancellation through.
        _kill_group(proc.pid)
        raise
    assert proc.returncode is not None
    return Completed(tuple(argv), proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
