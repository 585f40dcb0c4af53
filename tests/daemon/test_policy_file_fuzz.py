"""The policy-file loader against whatever a file may hold (issue 10): YAML documents of every
shape near a policy file, the same documents cut and spliced with stray bytes, and plain bytes.

For every file: loading it gives a policy or raises :class:`FileInvalid`, nothing else; a reload
of a refused one leaves the policy in force exactly as it was, quotes no value of the file, and
imports no module (a marker module would leave a file behind).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from wattshift.daemon.config.policy_file import load_policy_file
from wattshift.daemon.control.recorder import NullRecorder
from wattshift.daemon.runtime.policy_reload import PolicyReloader
from wattshift.policies.base import Policy

MARKER = "import pathlib\npathlib.Path(__file__).with_suffix('.ran').touch()\n\ndef make(options):\n    return None\n"

words = st.text(max_size=8)
scalars = st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.floats() | words
values = scalars | st.lists(scalars, max_size=3) | st.dictionaries(words, scalars | st.lists(scalars, max_size=2),
                                                                   max_size=3)
BUILTINS = ["merit-order", "strike-price", "ai-first"]
names = st.sampled_from([
    *BUILTINS, "merit_order", "no-such-policy", "", ":", "a:b.c",
    "acme_fuzz_marker:make", "subprocess:Popen", "os:system", "builtins:eval",
]) | words
option_keys = st.sampled_from([
    "step_watts", "hysteresis_usd_per_mwh", "min_dwell_seconds", "switch_horizon_seconds",
    "strike_usd_per_mwh", "curtail_after_minutes", "restore_after_minutes", "ai_headroom_kw",
    "priorities", "miners",
])
numbers = st.integers(-100, 100_000) | st.floats(-1e3, 1e6)
option_values = numbers | st.sampled_from([[], ["suspendable", "preemptible"], ["firm"], {}, {"step_watts": 50}])
windows = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["peak", "night", "peak"]),
        "cron": st.sampled_from(["0 15 * 6-9 mon-fri", "30 23 * * sat,sun", "0 15 * * 1-5", "0 25 * * *", "bad"]),
        "duration_minutes": st.integers(-5, 3000),
    },
    optional={
        "timezone": st.sampled_from(["America/Chicago", "UTC", "Mars/Olympus", "../../etc/passwd"]),
        "budget_kw": numbers,
        "budget_factor": st.floats(-1, 2),
        "options": st.dictionaries(option_keys, option_values, max_size=2),
    },
)
# Near a real policy file, so the checks deep inside (options, windows) are reached too ...
policy_files = st.fixed_dictionaries(
    {"policy": st.sampled_from(BUILTINS)},
    optional={
        "description": words,
        "options": st.dictionaries(option_keys, option_values, max_size=3),
        "windows": st.lists(windows, max_size=3),
    },
)
# ... and anything at all in the same places.
documents = st.fixed_dictionaries({}, optional={
    "policy": names | values,
    "description": words | values,
    "options": st.dictionaries(option_keys | st.text(max_size=8), option_values | values, max_size=4) | values,
    "windows": st.lists(windows | values, max_size=3) | values,
    "colour": values,
}) | values


def as_yaml(document: object) -> bytes:
    return yaml.safe_dump(document, allow_unicode=True).encode()


def spliced(parts: tuple[bytes, int, bytes]) -> bytes:
    text, at, stray = parts
    return text[:at] + stray + text[at + len(stray):]


files = st.one_of(
    policy_files.map(as_yaml),
    documents.map(as_yaml),
    st.tuples(policy_files.map(as_yaml), st.integers(0, 300), st.binary(min_size=1, max_size=4)).map(spliced),
    st.tuples(documents.map(as_yaml), st.integers(0, 300), st.binary(min_size=1, max_size=4)).map(spliced),
    st.text(max_size=300).map(str.encode),
    st.binary(max_size=300),
)


class Site:
    def __init__(self, policy) -> None:
        self.policy = policy
        self.recorder = NullRecorder()

    def request_replan(self, reason: str) -> None:
        pass


@pytest.fixture
def reloading(tmp_path, monkeypatch) -> tuple[Site, PolicyReloader, Path]:
    """A reloader following ``live.yaml``, and a module that leaves ``acme_fuzz_marker.ran``
    behind if anything imports it. One for all the examples: each one's file replaces the last."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "acme_fuzz_marker.py").write_text(MARKER)
    live = tmp_path / "live.yaml"
    live.write_text("policy: merit-order\n")
    site = Site(load_policy_file(live))
    return site, PolicyReloader(site, live), live


@seed(20261201)
@settings(max_examples=2000, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=files)
async def test_any_file_gives_a_policy_or_a_clear_refusal_and_a_refusal_changes_nothing(reloading, data):
    site, reloader, live = reloading
    running = site.policy
    live.write_bytes(data)
    result = await reloader.reload("fuzz")
    if result.accepted:
        assert isinstance(site.policy, Policy) and (site.policy is not running) == result.changed
    else:
        assert site.policy is running and reloader.path == live
        # Only FileInvalid is a refusal the loader means: anything else it raised, the reloader
        # reports as "could not be loaded: <type>".
        assert result.problems and not any("could not be loaded" in p for p in result.problems)
        assert not any("(got " in p for p in result.problems)
    assert not (live.parent / "acme_fuzz_marker.ran").exists()
