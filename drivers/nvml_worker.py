"""One dedicated thread for a blocking library, with a deadline per call.

NVML calls can block for seconds on a sick GPU (DESIGN.md, "GPUs through NVML"), so they never
run on the event loop. They run one at a time, in order, on one thread; a call that overruns
its deadline leaves its thread behind (a thread cannot be killed), and the next call gets a
fresh thread, so one stuck GPU cannot block the others. The threads are daemon threads: a call
stuck in the driver must not keep the process from exiting.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class CallTimeout(Exception):
    """The call did not return within its deadline; its thread was abandoned."""

    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(f"{what} did not return within {seconds:g} s")
        self.what = what
        self.seconds = seconds


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller gave up (deadline passed) or was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _Thread:
    """One daemon thread draining a queue of calls; ``None`` in the queue ends it."""

    _numbers = itertools.count(1)

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread = threading.Thread(
            target=self._run, name=f"{name}-{next(self._numbers)}", daemon=True
        )
        self.thread.start()

    def submit(self, fn: Callable[[], T], loop: asyncio.AbstractEventLoop) -> asyncio.Future[T]:
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, future, loop))
        return future

    def stop(self) -> None:
        self._queue.put(None)  # ends after the call in flight, if any, returns

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, future, loop = item
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn()
            except BaseException as exc:
                error = exc
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass
            del item, fn, future, result, error


class BlockingWorker:
    """Runs blocking calls one at a time on a dedicated thread, each with a deadline."""

    def __init__(self, name: str, timeout_s: float) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self._thread: _Thread | None = None
        self._lock = asyncio.Lock()  # one call in flight: its deadline starts when it starts
        self.abandoned: list[threading.Thread] = []

    async def call(self, fn: Callable[[], T], what: str, timeout_s: float | None = None) -> T:
        deadline = self.timeout_s if timeout_s is None else timeout_s
        async with self._lock:
            if self._thread is None:
                self._thread = _Thread(self.name)
            worker = self._thread
            future = worker.submit(fn, asyncio.get_running_loop())
            try:
                return await asyncio.wait_for(future, deadline)
            except TimeoutError:
                # The thread is stuck inside the library: leave it, start afresh next call.
                worker.stop()
                self.abandoned.append(worker.thread)
                self._thread = None
                raise CallTimeout(what, deadline) from None

    def close(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None
        self.abandoned = [t for t in self.abandoned if t.is_alive()]
