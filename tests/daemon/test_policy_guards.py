"""The guards on policy files as the running daemon reads them (issue 10, items 4, 8 and 20).

- Reading never stalls the event loop: a FIFO held open by a writer, ``/dev/zero`` and a 2 MB
  file are refused while a heartbeat task keeps beating; a read that outlives its deadline is
  refused and the loop goes on.
- A switch by name stays inside the policy directory (no absolute path, no ``..``, no symlink
  leading out), and no refusal quotes the file.
- Every reload failure is journaled (a real journal) and counted (a real registry), and the
  watcher carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from wattshift.daemon.config.policy_file import MAX_POLICY_BYTES, load_policy_file
from wattshift.daemon.control.recorder import JournalRecorder
from wattshift.daemon.journal.entries import EntryKind
from wattshift.daemon.journal.store import AsyncJournal
from wattshift.daemon.runtime.policy_reload import PolicyReloader

MERIT = "policy: merit-order\noptions:\n  min_dwell_seconds: 0\n"
STRIKE = "policy: strike-price\noptions:\n  strike_usd_per_mwh: 20\n"
HOLD_SECONDS = 4.0  # how long the FIFO's writer keeps it open (the issue: 25 s)


class Site:
    """What the reloader touches on a controller, journaling into a real journal."""

    def __init__(self, policy, journal: AsyncJournal) -> None:
        self.policy = policy
        self.recorder = JournalRecorder(journal)
        self.replans: list[str] = []

    def request_replan(self, reason: str) -> None:
        self.replans.append(reason)


class Heartbeat:
    """A task that beats every 10 ms: its longest gap says whether the loop was held up."""

    def __init__(self) -> None:
        self.beats = 0
        self.longest_gap = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            now = loop.time()
            self.longest_gap = max(self.longest_gap, now - last)
            last = now
            self.beats += 1


@contextlib.asynccontextmanager
async def beating() -> AsyncIterator[Heartbeat]:
    heart = Heartbeat()
    task = asyncio.create_task(heart.run())
    await asyncio.sleep(0.03)
    try:
        yield heart
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def journal(tmp_path) -> AsyncIterator[AsyncJournal]:
    async with await AsyncJournal.open(tmp_path / "journal.sqlite") as opened:
        yield opened


@pytest.fixture
def policy_dir(tmp_path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "live.yaml").write_text(MERIT)
    return folder


async def refusals(journal: AsyncJournal) -> list:
    return [e for e in await journal.query(kind=EntryKind.EVENT) if e.data.get("result") == "rejected"]


def rejected(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("wattshift_policy_reloads_total", {"result": "rejected"}) or 0.0


async def until(condition, what: str, deadline: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        assert loop.time() < end, f"gave up waiting for {what}"
        await asyncio.sleep(0.02)


def write(path: Path, data: str | bytes) -> None:
    """Replace the file's bytes and make sure its mtime moves even on a coarse file system."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def read_lines(path: Path) -> list[str]:
    """The file's lines, read synchronously (for the async tests, which read only small files)."""
    return path.read_text().splitlines()


# -- item 4: reading never stalls the loop -------------------------------------------------------


@contextlib.contextmanager
def fifo_held_open(path: Path) -> Iterator[None]:
    """``path`` becomes a FIFO whose writer, once a reader opens it, writes a valid policy and
    keeps it open for HOLD_SECONDS: a reader that reads to the end waits all that time."""
    path.unlink()
    os.mkfifo(path)
    released = threading.Event()

    def writer() -> None:
        fd = os.open(path, os.O_WRONLY)  # waits for a reader
        try:
            os.write(fd, MERIT.encode())
            released.wait(HOLD_SECONDS)
        finally:
            os.close(fd)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        released.set()
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # lets a writer still waiting go
        thread.join(10)
        os.close(reader)
        assert not thread.is_alive()


@contextlib.contextmanager
def dev_zero(path: Path) -> Iterator[None]:
    path.unlink()
    path.symlink_to("/dev/zero")
    yield


@contextlib.contextmanager
def two_megabytes(path: Path) -> Iterator[None]:
    # Valid YAML: read and parsed on the loop, this took seconds of stalled ticks.
    write(path, MERIT + "description: >\n" + "  a long and windy description of the policy\n" * 48_000)
    yield


@pytest.mark.parametrize(("make", "expected"), [
    (fifo_held_open, "not a regular file: it is a FIFO"),
    (dev_zero, "not a regular file: it is a character device"),
    (two_megabytes, f"larger than {MAX_POLICY_BYTES}"),
], ids=["fifo", "dev-zero", "2-MB"])
async def test_a_file_that_cannot_be_read_quickly_is_refused_and_the_loop_keeps_ticking(
    policy_dir, journal, make, expected
):
    live = policy_dir / "live.yaml"
    site = Site(load_policy_file(live), journal)
    running = site.policy
    reloader = PolicyReloader(site, live)
    with make(live):
        async with beating() as heart:
            result = await reloader.reload("file changed")
            beats = heart.beats
            await asyncio.sleep(0.1)
            assert heart.beats > beats, "the loop still ticks after the refusal"
        # Read on the loop, the FIFO held every tick for HOLD_SECONDS (and the others for seconds).
        assert heart.longest_gap < HOLD_SECONDS / 2
    assert not result.accepted
    [problem] = result.problems
    assert expected in problem and problem.startswith(f"{live}: ")
    assert site.policy is running and site.replans == []
    [row] = await refusals(journal)
    assert row.data["problems"] == [problem]


async def test_a_read_that_outlives_its_deadline_is_refused_while_the_loop_goes_on(
    policy_dir, journal, monkeypatch
):
    """A plug-in that takes its time (a stand-in for a hung mount): refused at the deadline;
    the read left behind blocks no tick, and one such read at most is left running."""
    monkeypatch.syspath_prepend(str(policy_dir.parent))
    (policy_dir.parent / "acme_slow.py").write_text(
        "import time\n"
        "from wattshift.policies.merit_order import MeritOrderPolicy\n\n"
        "def make(options):\n"
        "    time.sleep(float(options.get('sleep', 0)))\n"
        "    return MeritOrderPolicy.from_options({})\n"
    )
    monkeypatch.delitem(sys.modules, "acme_slow", raising=False)
    live = policy_dir / "live.yaml"
    site = Site(load_policy_file(live), journal)
    running = site.policy
    reloader = PolicyReloader(site, live, modules=["acme_slow"], deadline_seconds=0.3)
    write(live, "policy: acme_slow:make\noptions: {sleep: 1.5}\n")
    async with beating() as heart:
        slow = await reloader.reload("file changed")
        again = await reloader.reload("SIGHUP")
        assert heart.longest_gap < 1.0
    assert not slow.accepted and "not read and checked within 0.3 s" in slow.problems[0]
    assert not again.accepted and "an earlier read of a policy file has not finished" in again.problems[0]
    assert site.policy is running
    write(live, STRIKE)  # fixed; once the stuck read ends, the next reload goes through
    results = []

    async def reload_until_accepted() -> bool:
        results.append(await reloader.reload("SIGHUP"))
        return results[-1].accepted

    loop = asyncio.get_running_loop()
    end = loop.time() + 20
    while not await reload_until_accepted():
        assert "has not finished" in results[-1].problems[0] and loop.time() < end
        await asyncio.sleep(0.1)
    assert site.policy.name == "strike-price"


# -- item 8: confined to the policy directory, nothing quoted --------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("/etc/shadow", "an absolute path is not allowed"),
    ("{outside}", "an absolute path is not allowed"),
    ("../outside.yaml", "'..' is not allowed"),
    ("sub/../../outside.yaml", "'..' is not allowed"),
    ("escape.yaml", "it leads out of the policy directory (through a symlink)"),
    ("missing.yaml", "cannot read: No such file or directory"),
], ids=["etc-shadow", "absolute", "dotdot", "nested-dotdot", "symlink-out", "missing"])
async def test_a_switch_names_a_file_inside_the_policy_directory_or_is_refused(
    policy_dir, journal, name, expected
):
    outside = policy_dir.parent / "outside.yaml"
    outside.write_text(STRIKE)  # a valid policy: only where it is gets it refused
    (policy_dir / "sub").mkdir()
    (policy_dir / "escape.yaml").symlink_to(outside)
    name = name.format(outside=outside)
    live = policy_dir / "live.yaml"
    site = Site(load_policy_file(live), journal)
    running = site.policy
    reloader = PolicyReloader(site, live)

    result = await reloader.switch_policy(Path(name), reason="mqtt command")  # as the handler calls it
    assert not result.accepted
    [problem] = result.problems
    assert expected in problem and f"the policy directory {policy_dir}" in problem
    assert site.policy is running and reloader.path == live
    [row] = await refusals(journal)
    assert row.data["problems"] == [problem]
    said = result.message + problem + repr(row.data)
    assert "strike" not in said
    if name == "/etc/shadow" and os.access("/etc/shadow", os.R_OK):
        for line in read_lines(Path("/etc/shadow")):
            assert line.split(":")[0] + ":" not in said


async def test_a_symlink_inside_the_directory_is_followed_and_confined_on_every_reload(policy_dir, journal):
    (policy_dir / "summer.yaml").write_text(STRIKE)
    (policy_dir / "current.yaml").symlink_to("summer.yaml")
    live = policy_dir / "live.yaml"
    site = Site(load_policy_file(live), journal)
    reloader = PolicyReloader(site, live)
    assert (await reloader.switch_policy("current.yaml")).accepted
    assert reloader.path == policy_dir / "current.yaml" and site.policy.name == "strike-price"
    strike = site.policy
    # Re-pointed out of the directory after the switch: the next reload is refused.
    outside = policy_dir.parent / "outside.yaml"
    outside.write_text(MERIT)
    (policy_dir / "current.yaml").unlink()
    (policy_dir / "current.yaml").symlink_to(outside)
    result = await reloader.reload("SIGHUP")
    assert not result.accepted and "leads out of the policy directory" in result.problems[0]
    assert site.policy is strike


async def test_refusals_quote_neither_values_nor_lines_of_the_file(policy_dir, journal, caplog):
    """Files in the directory that are not policy files (a copy of a shadow file, a site file
    with a password, a secrets file): each is refused as not a policy file, and nothing of what
    it says comes back, not even the names of its keys."""
    (policy_dir / "shadow.yaml").write_text("root:$6$saltsalt$hashhashhash:19000:0:99999:7:::\n"
                                            "daemon:*:19000:0:99999:7:::\n")
    (policy_dir / "site.yaml").write_text("policy: {name: merit-order, password: hunter2}\n"
                                          "description: [hunter3]\n")
    (policy_dir / "secrets.yaml").write_text("miners-admin: {username: root, password: hunter4}\n")
    live = policy_dir / "live.yaml"
    site = Site(load_policy_file(live), journal)
    reloader = PolicyReloader(site, live)
    answers = [await reloader.switch_policy(name) for name in ("shadow.yaml", "site.yaml", "secrets.yaml")]
    for name, answer in zip(("shadow.yaml", "site.yaml", "secrets.yaml"), answers, strict=True):
        assert not answer.accepted
        assert answer.problems == (f"{policy_dir}/{name}: (top level): not a policy file (no 'policy:' name, "
                                   "or it does not parse: `wattshift validate` says why)",)
    assert site.policy.name == "merit-order"
    said = repr((answers, [r.data for r in await refusals(journal)])) + caplog.text
    for secret in ("hashhash", "root:", "daemon:", "hunter2", "hunter3", "hunter4", "miners-admin", "password"):
        assert secret not in said


async def test_a_policy_file_that_does_not_hold_is_refused_at_its_lines_without_its_values(policy_dir, journal):
    (policy_dir / "typo.yaml").write_text("policy: merit-order\noptions: {step_watts: lots}\n")
    site = Site(load_policy_file(policy_dir / "live.yaml"), journal)
    answer = await PolicyReloader(site, policy_dir / "live.yaml").switch_policy("typo.yaml")
    assert not answer.accepted
    assert any(p.startswith(f"{policy_dir}/typo.yaml:2: ") and "step_watts" in p for p in answer.problems)
    assert "lots" not in repr(answer)


# -- item 20: every failure journaled and counted; the watcher carries on ---------------------------


async def test_a_non_utf8_write_is_journaled_and_counted_and_the_watcher_carries_on(policy_dir, journal):
    live = policy_dir / "live.yaml"
    registry = CollectorRegistry()
    site = Site(load_policy_file(live), journal)
    running = site.policy
    reloader = PolicyReloader(site, live, registry=registry, poll_seconds=0.05)
    stop = asyncio.Event()
    watcher = asyncio.create_task(reloader.watch(stop))
    try:
        write(live, b"policy: merit-order\ndescription: caf\xe9\n")  # Latin-1, not UTF-8
        await until(lambda: rejected(registry) == 1, "the refusal of the non-UTF-8 file")
        assert site.policy is running and not watcher.done()
        write(live, STRIKE)
        await until(lambda: site.policy.name == "strike-price", "the later valid edit")
    finally:
        stop.set()
        await watcher
    [row] = await refusals(journal)
    assert row.data["problems"] == [f"{live}:2: (top level): not UTF-8 text (byte 0xe9 at offset 36): save it as UTF-8"]


async def test_a_plugin_that_exits_is_refused_not_fatal_and_the_watcher_carries_on(
    policy_dir, journal, monkeypatch
):
    monkeypatch.syspath_prepend(str(policy_dir.parent))
    (policy_dir.parent / "acme_exit.py").write_text("import sys\n\ndef make(options):\n    sys.exit(3)\n")
    monkeypatch.delitem(sys.modules, "acme_exit", raising=False)
    live = policy_dir / "live.yaml"
    registry = CollectorRegistry()
    site = Site(load_policy_file(live), journal)
    running = site.policy
    reloader = PolicyReloader(site, live, modules=["acme_exit"], registry=registry, poll_seconds=0.05)
    stop = asyncio.Event()
    watcher = asyncio.create_task(reloader.watch(stop))
    try:
        write(live, "policy: acme_exit:make\n")
        await until(lambda: rejected(registry) == 1, "the refusal of the exiting plug-in")
        assert site.policy is running and not watcher.done()
        write(live, STRIKE)
        await until(lambda: site.policy.name == "strike-price", "the later valid edit")
    finally:
        stop.set()
        await watcher
    [row] = await refusals(journal)
    assert row.data["problems"] == [f"{live}: (top level): could not be loaded: SystemExit (see the log)"]


async def test_the_watcher_carries_on_when_journaling_a_refusal_fails(policy_dir, journal):
    live = policy_dir / "live.yaml"
    registry = CollectorRegistry()
    site = Site(load_policy_file(live), journal)

    class BrokenRecorder:
        async def event(self, summary: str, data: dict) -> None:
            raise OSError("disk full")

    site.recorder = BrokenRecorder()
    reloader = PolicyReloader(site, live, registry=registry, poll_seconds=0.05)
    stop = asyncio.Event()
    watcher = asyncio.create_task(reloader.watch(stop))
    try:
        write(live, "policy: no-such-policy\n")
        await until(lambda: rejected(registry) == 1, "the refusal, counted before it is journaled")
        site.recorder = JournalRecorder(journal)
        write(live, STRIKE)
        await until(lambda: site.policy.name == "strike-price", "the later valid edit")
    finally:
        stop.set()
        await watcher
