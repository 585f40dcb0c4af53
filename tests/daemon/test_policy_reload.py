"""Hot reload against a real Controller over simulated miners (real pyasic, real sockets):
a valid edit takes effect in the next tick; a bad file changes nothing; both are journaled
and counted."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from simsite import running_site

from wattshift.daemon.config.policy_file import load_policy_file
from wattshift.daemon.journal.entries import EntryKind
from wattshift.daemon.runtime.policy_reload import PolicyReloader
from wattshift.simulators.site import MinerBatch

SITE = [MinerBatch("luxos", 2, "site", "Antminer S21")]
MERIT = "policy: merit-order\noptions:\n  min_dwell_seconds: 0\n"
# At $40/MWh a strike of $20 curtails at once.
STRIKE = ("policy: strike-price\noptions:\n  strike_usd_per_mwh: 20\n  curtail_after_minutes: 0\n"
          "  min_dwell_seconds: 0\n")
BAD = "policy: strike-price\noptions:\n  strike_usd_per_mwh: 20\n  hysteresis_usd_per_mwh: -1\n"


def reloads(daemon, result: str) -> float:
    value = daemon.metrics.registry.get_sample_value("wattshift_policy_reloads_total", {"result": result})
    return value or 0.0


async def events(daemon) -> list:
    return [e for e in await daemon.journal.query(kind=EntryKind.EVENT) if "policy file" in e.summary]


async def until(condition, what: str, deadline: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        assert loop.time() < end, f"gave up waiting for {what}"
        await asyncio.sleep(0.02)


def write(path, text: str) -> None:
    """Write the file and make sure its mtime moves even on a coarse-grained filesystem."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


async def test_a_valid_edit_takes_effect_in_the_next_tick_and_a_bad_one_changes_nothing(tmp_path):
    policy_path = tmp_path / "policy.yaml"
    write(policy_path, MERIT)
    async with running_site(SITE, tmp_path, first_address="127.0.77.1", budget_kw=20,
                            dry_run=True) as (_sim, daemon, _budget, _truth):
        controller = daemon.controller
        controller.policy = load_policy_file(policy_path)  # what app.py does with policy_file
        reloader = PolicyReloader(controller, policy_path, registry=daemon.metrics.registry)
        report = await controller.run_once()
        assert report.allocation.planned_watts() > 0 and controller.policy.name == "merit-order"

        write(policy_path, STRIKE)
        result = await reloader.reload("test")
        assert result.accepted and result.changed
        report = await controller.run_once()
        assert report.allocation.summary.startswith("strike-price: curtailed")
        assert all(t.watts == 0 for t in report.allocation)
        [accepted] = await events(daemon)
        assert accepted.data["result"] == "accepted"
        assert "-policy: merit-order\n" in accepted.data["diff"]
        assert "+policy: strike-price\n" in accepted.data["diff"]
        assert reloads(daemon, "accepted") == 1 and reloads(daemon, "rejected") == 0

        running = controller.policy
        write(policy_path, BAD)
        result = await reloader.reload("test")
        assert not result.accepted
        assert result.problems == (f"{policy_path}:4: options.hysteresis_usd_per_mwh: "
                                   "Input should be greater than or equal to 0",)
        assert controller.policy is running
        report = await controller.run_once()
        assert report.allocation.summary.startswith("strike-price: curtailed")
        rejected = (await events(daemon))[-1]
        assert rejected.data["result"] == "rejected" and "hysteresis_usd_per_mwh" in rejected.data["problems"][0]
        assert reloads(daemon, "accepted") == 1 and reloads(daemon, "rejected") == 1


async def test_the_watcher_and_sighup_pick_up_changes(tmp_path):
    policy_path = tmp_path / "policy.yaml"
    write(policy_path, MERIT)
    async with running_site(SITE, tmp_path, first_address="127.0.77.11", budget_kw=20,
                            dry_run=True) as (_sim, daemon, _budget, _truth):
        controller = daemon.controller
        controller.policy = load_policy_file(policy_path)
        reloader = PolicyReloader(controller, policy_path, registry=daemon.metrics.registry, poll_seconds=0.05)
        stop = asyncio.Event()
        watcher = asyncio.create_task(reloader.watch(stop))
        try:
            write(policy_path, STRIKE)
            await until(lambda: controller.policy.name == "strike-price", "the watcher to reload")
            # A bad edit is refused once, not every poll.
            write(policy_path, BAD)
            await until(lambda: reloads(daemon, "rejected") == 1, "the refusal")
            await asyncio.sleep(0.3)
            assert reloads(daemon, "rejected") == 1 and controller.policy.name == "strike-price"
        finally:
            stop.set()
            await watcher

        loop = asyncio.get_running_loop()
        reloader.install_sighup(loop)
        try:
            policy_path.write_text(MERIT)  # fixed by hand, then `systemctl reload`
            os.kill(os.getpid(), signal.SIGHUP)
            await until(lambda: controller.policy.name == "merit-order", "the SIGHUP reload")
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
        report = await controller.run_once()
        assert report.allocation.planned_watts() > 0
        assert reloads(daemon, "accepted") == 2


async def test_switch_policy_follows_a_new_file_only_when_it_is_valid(tmp_path):
    live, other, broken = tmp_path / "live.yaml", tmp_path / "other.yaml", tmp_path / "broken.yaml"
    write(live, MERIT)
    write(other, STRIKE)
    write(broken, BAD)
    async with running_site(SITE, tmp_path, first_address="127.0.77.21", budget_kw=20,
                            dry_run=True) as (_sim, daemon, _budget, _truth):
        controller = daemon.controller
        controller.policy = load_policy_file(live)
        reloader = PolicyReloader(controller, live)  # the policy directory: the folder of live
        refused = await reloader.switch_policy("broken.yaml")
        assert not refused.accepted and "hysteresis_usd_per_mwh" in refused.problems[0]
        assert reloader.path == live and controller.policy.name == "merit-order"
        assert (await reloader.switch_policy("other.yaml")).accepted
        assert reloader.path == other
        report = await controller.run_once()
        assert report.allocation.summary.startswith("strike-price")


@pytest.mark.parametrize("text", [MERIT])
async def test_an_unchanged_file_is_not_journaled_as_a_change(tmp_path, text):
    path = tmp_path / "p.yaml"
    write(path, text)

    class Loop:
        policy = load_policy_file(path)
        recorder = None

        def request_replan(self, reason: str) -> None:
            raise AssertionError("nothing changed: no re-plan")

    result = await PolicyReloader(Loop(), path).reload("SIGHUP")
    assert result.accepted and not result.changed


class _Stub:
    """Just what the reloader touches on a controller."""

    def __init__(self, policy) -> None:
        from wattshift.daemon.control.recorder import NullRecorder

        self.policy = policy
        self.recorder = NullRecorder()
        self.replans: list[str] = []

    def request_replan(self, reason: str) -> None:
        self.replans.append(reason)


async def test_run_wiring_reloads_the_sites_policy_file_on_sighup(tmp_path):
    from types import SimpleNamespace

    from wattshift.daemon.runtime.policy_reload import policy_reloading

    write(tmp_path / "p.yaml", MERIT)
    stub = _Stub(load_policy_file(tmp_path / "p.yaml"))
    site = SimpleNamespace(policy_file="p.yaml")  # relative to the site file's folder
    async with policy_reloading(stub, site, tmp_path, None) as reloader:
        assert reloader is not None and reloader.path == tmp_path / "p.yaml"
        (tmp_path / "p.yaml").write_text(STRIKE)
        os.kill(os.getpid(), signal.SIGHUP)
        await until(lambda: stub.policy.name == "strike-price", "the SIGHUP reload")
    assert stub.replans == ["policy reloaded"]


async def test_without_a_policy_file_sighup_is_caught_not_fatal(tmp_path, caplog):
    from types import SimpleNamespace

    from wattshift.daemon.runtime.policy_reload import policy_reloading

    stub = _Stub(None)
    async with policy_reloading(stub, SimpleNamespace(policy_file=None), tmp_path, None) as reloader:
        assert reloader is None
        os.kill(os.getpid(), signal.SIGHUP)  # the default action would end this process
        await until(lambda: "nothing to reload" in caplog.text, "the warning")


SITE_FILE = "name: barn\nbudget_kw: 100\npolicy_file: policies/live.yaml\n"


@pytest.mark.parametrize(("extra", "folder"), [
    ("", "policies"),  # by default, the folder of policy_file
    ("policy_dir: library\n", "library"),  # relative to the site file, like policy_file
])
async def test_the_site_file_names_the_policy_directory_and_the_allowed_modules(tmp_path, extra, folder):
    from wattshift.daemon.config.site import load_site
    from wattshift.daemon.runtime.policy_reload import policy_reloading

    for name in ("policies", "library"):
        (tmp_path / name).mkdir()
    write(tmp_path / "policies" / "live.yaml", MERIT)
    write(tmp_path / "library" / "other.yaml", STRIKE)
    (tmp_path / "site.yaml").write_text(SITE_FILE + extra + "policy_modules: [acme_policies, acme.sub]\n")
    site = load_site(tmp_path / "site.yaml", environ={})
    stub = _Stub(load_policy_file(tmp_path / "policies" / "live.yaml"))
    async with policy_reloading(stub, site, tmp_path, None) as reloader:
        assert reloader is not None and reloader.policy_dir == tmp_path / folder
        assert reloader.modules == ("acme_policies", "acme.sub")
        switched = await reloader.switch_policy("other.yaml")
    assert switched.accepted == (folder == "library")


def test_a_policy_module_must_be_a_module_name(tmp_path):
    from wattshift.daemon.config.site import load_site
    from wattshift.daemon.config.yamlfile import FileInvalid

    (tmp_path / "site.yaml").write_text(SITE_FILE + "policy_modules: [acme_policies, 'os; rm -rf /']\n")
    with pytest.raises(FileInvalid) as caught:
        load_site(tmp_path / "site.yaml", environ={})
    [problem] = caught.value.problems
    assert (problem.line, problem.key) == (4, "policy_modules[1]")
    assert problem.reason == "not a Python module name (like acme_policies or acme.policies) (got 'os; rm -rf /')"
