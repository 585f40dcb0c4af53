"""Property: whatever the bytes of a site file, loading it gives a validated site or the loader's
clear error (`validate` exits 2 with a message), never another exception, and it changes nothing
(no directory, journal or file is made, the environment is as it was)."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from wattshift.daemon.cli import validate as validate_cmd
from wattshift.daemon.config.site import SiteConfig, load_site
from wattshift.daemon.config.yamlfile import FileInvalid

GOOD = """\
name: north-barn
budget_kw: 1000
reserve_kw: 20
circuits:
  - name: transformer-1
    limit_kw: 600
    circuits:
      - {name: container-a, limit_kw: 300}
miners:
  - circuit: container-a
    addresses: 10.0.0.1-10.0.0.40
    firmware: braiins
  - addresses: [10.0.1.0/30, 10.0.2.9]
gpu_nodes:
  - {name: gpu-01, gpus: 0-7, circuit: transformer-1}
state_dir: state
"""

KEYS = ["name", "budget_kw", "reserve_kw", "tick_seconds", "circuits", "limit_kw", "miners", "addresses",
        "circuit", "firmware", "model", "max_kw", "credentials", "gpu_nodes", "gpus", "jobs", "classes",
        "market", "prices", "policy", "policy_file", "drivers", "mqtt", "metrics_listen", "secrets_file",
        "state_dir", "<<"]
ODD = ["site", "container-a", "10.0.0.0/8", "10.0.0.9-10.0.0.1", "::/0", "10.0.0.1-::1", "0-7", "7-0", "all",
       "braiins", "127.0.0.1:99999", "[::1]:9464", "9" * 60, "0x" + "f" * 50, "2024-13-01", "1e400", ".nan",
       "-.inf", "\u00b2", "\u0663", "~", "", " ", "null"]
# Fragments that break YAML in the ways operators and attackers do: anchors, aliases, merges,
# tags, tabs, unclosed brackets, stray quotes, control and non-UTF-8 bytes, duplicate keys.
FRAGMENTS = [b"&a ", b"*a", b"*b", b"<<: *a\n", b"[", b"]", b"{", b"}", b": ", b"\n  ", b"\n- ", b"- ",
             b"!!python/object:os.system ", b"!!binary ", b"!!set ", b"\t", b"'", b'"', b"#", b"? ", b"|\n",
             b"\x00", b"\xff", b"\xef\xbb\xbf", b"\xfe\xff", b"9" * 5000, b"budget_kw: 5000\n", b"---\n",
             b"...\n", b"%YAML 1.1\n", b"&a [*a]", b"limit_kw: 900\n", b"circuit: nowhere\n"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9), st.floats(),
                    st.text(max_size=12), st.sampled_from(ODD))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5),
    max_leaves=12,
)


@st.composite
def structured(draw: st.DrawFn) -> bytes:
    """A mapping with the site file's keys and values of any shape, some of them legal."""
    base = yaml.safe_load(GOOD)
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=4)):
        base[key] = draw(values)
    for key in draw(st.lists(st.sampled_from(sorted(base)), max_size=2)):
        base.pop(key, None)
    return yaml.safe_dump(base, allow_unicode=draw(st.booleans())).encode()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """The good file with fragments spliced in, bytes cut out, or lines repeated."""
    data = bytearray(GOOD.encode())
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "cut", "repeat"]))
        if action == "insert":
            data[at:at] = draw(st.sampled_from(FRAGMENTS))
        elif action == "cut":
            del data[at:at + draw(st.integers(1, 20))]
        else:
            end = data.find(b"\n", at)
            line = data[at:end + 1] if end >= 0 else data[at:]
            data[at:at] = line * draw(st.integers(1, 3))
    return bytes(data)


files = st.one_of(structured(), mutated(), st.binary(max_size=300),
                  st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))


def _snapshot(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_size for p in directory.rglob("*")}


@seed(20261201)
@settings(max_examples=2000, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(content=files)
def test_any_site_file_loads_or_is_refused_clearly_and_changes_nothing(tmp_path_factory, content):
    directory = tmp_path_factory.mktemp("fuzz")
    path = directory / "site.yaml"
    path.write_bytes(content)
    before, environ = _snapshot(directory), dict(os.environ)
    try:
        site = load_site(path, environ={})
    except FileInvalid as err:
        assert err.problems and all(p.file and p.reason for p in err.problems)  # the site or its secrets file
        site = None
    assert site is None or isinstance(site, SiteConfig)
    # `wattshift validate` (past its argument parsing) gives the same verdict: 0 and "ok", or 2
    # and a line saying nothing changed.
    out, err_text = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err_text):
        code = validate_cmd.run(argparse.Namespace(file=path, policy=None))
    if site is None:
        assert code == 2 and err_text.getvalue().endswith("problem(s); nothing was changed\n"), err_text.getvalue()
    else:
        assert code in (0, 2)  # 2: a policy or trace file it names is refused
        assert code == 2 or out.getvalue().startswith("ok\n")
    assert "Traceback" not in err_text.getvalue()
    assert _snapshot(directory) == before, "loading a file must write nothing"
    assert dict(os.environ) == environ
