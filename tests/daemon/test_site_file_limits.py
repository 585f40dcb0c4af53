"""Hostile and mistaken site files: `wattshift validate` exits 2 with a message for each, in
seconds, and names every problem at its own line; legal-but-odd files get a warning."""

from __future__ import annotations

import codecs
import logging
import os
import socket
import stat
from pathlib import Path

import pytest

from wattshift.daemon.cli.main import main
from wattshift.daemon.config.policy_file import (
    MAX_POLICY_BYTES,
    parse_policy_file,
    read_policy_file,
)
from wattshift.daemon.config.site import load_site
from wattshift.daemon.config.yamlfile import FileInvalid
from wattshift.daemon.journal.store import Journal

HEAD = "name: s\nbudget_kw: 1000\n"


@pytest.fixture(autouse=True)
def _keep_logging():
    """``main`` points the root logger at the captured stderr; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def _alias_bomb() -> str:
    lines = [HEAD.rstrip("\n"), "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for name, previous in zip("bcdefghi", "abcdefgh", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines) + "\n"


HOSTILE: dict[str, tuple[bytes, str]] = {
    "latin-1": ((HEAD + "# caf\xe9\n").encode("latin-1"), ":3: (top level): not UTF-8 text (byte 0xe9"),
    "utf-16": (HEAD.encode("utf-16"), "the file is UTF-16 or UTF-32 text: save it as UTF-8"),
    "utf-16 without a mark": (HEAD.encode("utf-16-le"), "NUL bytes: is this UTF-16 text"),
    "5000-digit integer": (f"name: s\nbudget_kw: {'9' * 5000}\n".encode(),
                           ":2: (top level): not valid YAML: an integer of 5000 digits"),
    "lists 5000 deep": ((HEAD + "x: " + "[" * 5000 + "]" * 5000 + "\n").encode(), ":3: (top level): not valid YAML"),
    "lists 100 deep": ((HEAD + "x: " + "[" * 100 + "]" * 100 + "\n").encode(), "nested deeper than 32 levels"),
    "alias bomb": (_alias_bomb().encode(), "the aliases (*name) expand to more than 500,000 values"),
    "a thousand and one aliases": ((HEAD + "x: &x 1\ny: [" + "*x, " * 1001 + "]\n").encode(),
                                   ":4: (top level): not valid YAML: more than 1000 aliases (*name)"),
    "aliases nesting deep": ((HEAD + "a: &a [[[[[[[[1]]]]]]]]\nb: &b [[[[[[[[*a]]]]]]]]\nc: &c [[[[[[[[*b]]]]]]]]\n"
                              "d: &d [[[[[[[[*c]]]]]]]]\ne: [[[[[[[[*d]]]]]]]]\n").encode(),
                             "nested deeper than 32 levels once aliases are expanded"),
    "a control character": ((HEAD + "x: \x07\n").encode(), ":3: (top level): not valid YAML: character #x0007"),
    "alias cycle": ((HEAD + "x: &x [1, *x]\n").encode(), "an alias (*name) inside its own anchor"),
    "a 13th month": ((HEAD + "x: 2024-13-01\n").encode(),
                     "not valid YAML: cannot read this value: month must be in 1..12"),
    "a /8 of miners": ((HEAD + "miners:\n  - addresses: 10.0.0.0/8\n").encode(),
                       ":4: miners[0].addresses[0]: address '10.0.0.0/8': 16,777,216 addresses, more than 65,536"),
    "all of IPv6": ((HEAD + "miners:\n  - addresses: ['::/0']\n").encode(), "more than 65,536 in one entry"),
    "10 MB of unknown keys": ((HEAD + "".join(f"k{i}: {i}\n" for i in range(800_000))).encode(),
                              "(top level): larger than 2 MiB"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_files_exit_2_with_a_message(tmp_path, capsys, name):
    content, message = HOSTILE[name]
    path = tmp_path / "site.yaml"
    path.write_bytes(content)
    code, out, err = validate(path, capsys)
    assert code == 2, err
    assert message in err
    assert err.endswith("problem(s); nothing was changed\n") and "Traceback" not in err and out == ""


def test_ranges_are_counted_before_they_are_expanded(tmp_path, capsys):
    # 20 ranges of 65,536 each pass one by one; together they are more than a site has.
    ranges = "".join(f"  - addresses: 10.{i}.0.0-10.{i}.255.255\n" for i in range(20))
    path = tmp_path / "site.yaml"
    path.write_text(HEAD + "miners:\n" + ranges)
    code, _, err = validate(path, capsys)
    # each range: 65,536 addresses less the .0 and .255 of its 256 /24s, but its own first and last
    assert code == 2 and "miners: 1,300,520 miners: more than 100,000 on one site" in err


def test_thousands_of_unknown_keys_are_counted_not_all_printed(tmp_path, capsys):
    from wattshift.daemon.config.yamlfile import MAX_PROBLEMS

    path = tmp_path / "site.yaml"
    path.write_text(HEAD + "".join(f"k{i}: {i}\n" for i in range(5_000)))
    code, _, err = validate(path, capsys)
    lines = err.splitlines()
    assert code == 2 and lines[0] == f"{path}:3: k0: Extra inputs are not permitted"
    assert len(lines) == MAX_PROBLEMS + 2
    assert lines[-2] == f"{path}: (top level): ... and {5_000 - MAX_PROBLEMS} more problem(s) not shown"
    assert lines[-1] == f"{path}: 5000 problem(s); nothing was changed"


# -- item 17: duplicate keys ----------------------------------------------------------------------

def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path, capsys):
    path = tmp_path / "site.yaml"
    path.write_text("name: s\nbudget_kw: 100\nreserve_kw: 5\nbudget_kw: 5000\n")
    code, _, err = validate(path, capsys)
    assert code == 2
    assert f"{path}:4: budget_kw: given twice (line 2 and line 4)" in err


def test_every_duplicate_is_named_nested_ones_too(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(HEAD + "circuits:\n  - {name: a, limit_kw: 60, limit_kw: 600}\n"
                    "miners:\n  - addresses: 10.0.0.1\n    addresses: 10.0.0.2\nname: t\n")
    with pytest.raises(FileInvalid) as caught:
        load_site(path, environ={})
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:4: circuits[0].limit_kw: given twice (line 4 and line 4); "
        "YAML would silently keep the last: remove one",
        f"{path}:7: miners[0].addresses: given twice (line 6 and line 7); "
        "YAML would silently keep the last: remove one",
        f"{path}:8: name: given twice (line 1 and line 8); YAML would silently keep the last: remove one",
    ]


def test_a_merge_key_may_be_overridden(tmp_path):
    # `<<: *defaults` then a key of its own is YAML's way of overriding, not a duplicate.
    path = tmp_path / "site.yaml"
    path.write_text(HEAD + "miners:\n  - &g {addresses: 10.0.0.1, firmware: braiins}\n"
                    "  - {<<: *g, addresses: 10.0.0.2}\n")
    site = load_site(path, environ={})
    assert [g.firmware for g in site.miners] == ["braiins", "braiins"]
    assert [list(g.hosts()) for g in site.miners] == [["10.0.0.1"], ["10.0.0.2"]]


def test_a_credential_given_twice_in_the_secrets_file_is_refused_without_its_value(tmp_path):
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("braiins: {password: first-secret}\nbraiins: {password: second-secret}\n")
    secrets.chmod(0o600)
    path = tmp_path / "site.yaml"
    path.write_text(HEAD + "secrets_file: secrets.yaml\n")
    with pytest.raises(FileInvalid) as caught:
        load_site(path, environ={})
    assert str(caught.value) == (f"{secrets}:2: braiins: given twice (line 1 and line 2); "
                                 "YAML would silently keep the last: remove one")
    assert "secret" not in str(caught.value).replace("secrets.yaml", "")


# -- item 18: every problem at its own line -------------------------------------------------------

SEVERAL = """\
name: s
budget_kw: 100
reserve_kw: 200
circuits:
  - name: feeder
    limit_kw: 60
  - name: feeder
    limit_kw: 50
miners:
  - circuit: nowhere
    addresses: 10.0.0.1
    credentials: braiins
  - circuit: feeder
    addresses: 10.0.0.1
gpu_nodes:
  - {name: gpu-01, circuit: elsewhere}
prices:
  stale_after_seconds: -1
jobs:
  classes:
    - {match: '*', market: H100}
drivers: {concurrency: 0}
"""


def test_every_problem_is_reported_at_its_own_line(tmp_path, capsys):
    path = tmp_path / "site.yaml"
    path.write_text(SEVERAL)
    code, _, err = validate(path, capsys)
    assert code == 2
    expected = [
        "3: reserve_kw: must be below budget_kw (100) (got 200)",
        "7: circuits[1].name: circuit names must be unique ('site' is the root): 'feeder' is already circuits[0]",
        "18: prices.stale_after_seconds: Input should be greater than 0 (got -1)",
        "22: drivers.concurrency: Input should be greater than or equal to 1 (got 0)",
        "14: miners[1].addresses: 10.0.0.1 is already listed as miners[0]",
        "12: miners[0].credentials: 'braiins' is not in the secrets file (none given)",
    ]
    assert err.splitlines() == [*(f"{path}:{line}" for line in expected),
                                f"{path}: {len(expected)} problem(s); nothing was changed"]


def test_cross_field_problems_each_get_their_own_line(tmp_path):
    fixed = SEVERAL.replace("reserve_kw: 200", "reserve_kw: 20").replace("  - name: feeder\n    limit_kw: 50\n", "")
    fixed = fixed.replace("stale_after_seconds: -1", "stale_after_seconds: 60")
    fixed = fixed.replace("concurrency: 0", "concurrency: 5")
    path = tmp_path / "site.yaml"
    path.write_text(fixed)
    with pytest.raises(FileInvalid) as caught:
        load_site(path, environ={})
    assert [str(p) for p in caught.value.problems] == [f"{path}:{line}" for line in [
        "8: miners[0].circuit: 'nowhere' is not a circuit (known: ['site', 'feeder'])",
        "14: gpu_nodes[0].circuit: 'elsewhere' is not a circuit (known: ['site', 'feeder'])",
        "12: miners[1].addresses: 10.0.0.1 is already listed as miners[0]",
        "19: jobs.classes[0].market: 'H100' has no rate in prices.gpu_rates_usd_per_gpu_hour (known: none)",
        "10: miners[0].credentials: 'braiins' is not in the secrets file (none given)",
    ]]


def test_every_bad_policy_option_is_reported(tmp_path):
    text = "policy: strike-price\noptions:\n  strike_usd_per_mwh: -9500\n  hysteresis_usd_per_mwh: -5\n  strik: 1\n"
    with pytest.raises(FileInvalid) as caught:
        parse_policy_file(text, "p.yaml")
    assert [str(p) for p in caught.value.problems] == [
        "p.yaml:3: options.strike_usd_per_mwh: Input should be greater than or equal to -1000",
        "p.yaml:4: options.hysteresis_usd_per_mwh: Input should be greater than or equal to 0",
        "p.yaml:5: options.strik: Extra inputs are not permitted",
    ]


# -- item 19: circuits within their parent --------------------------------------------------------

TREE = HEAD + """\
circuits:
  - name: feeder
    limit_kw: 60
    circuits:
      - {name: pdu-a, limit_kw: A}
      - {name: pdu-b, limit_kw: B}
"""


def test_a_child_circuit_above_its_parent_is_refused(tmp_path, capsys):
    path = tmp_path / "site.yaml"
    path.write_text(TREE.replace("A}", "90}").replace("B}", "20}"))
    code, _, err = validate(path, capsys)
    assert code == 2
    assert f"{path}:7: circuits[0].circuits[0].limit_kw: 90 kW is above the 60 kW of feeder" in err


def test_children_adding_up_to_more_than_their_parent_only_warn(tmp_path, capsys):
    path = tmp_path / "site.yaml"
    path.write_text(TREE.replace("A}", "40}").replace("B}", "40}"))
    code, out, err = validate(path, capsys)
    assert code == 0 and out.startswith("ok\n")
    assert (f"WARNING wattshift.files: {path}:6: circuits[0].circuits: the circuits under feeder add up to "
            "80 kW, above its 60 kW: oversubscribed, so the daemon holds their sum to 60 kW") in err


def test_children_within_their_parent_say_nothing(tmp_path, capsys):
    path = tmp_path / "site.yaml"
    path.write_text(TREE.replace("A}", "30}").replace("B}", "30}"))
    code, _, err = validate(path, capsys)
    assert code == 0 and err == ""


# -- item 21: defaults that leak ------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o640, True), (0o600, False), (0o400, False)])
def test_a_secrets_file_others_can_read_is_warned_about(tmp_path, capsys, mode, warned):
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("braiins: {password: hunter2}\n")
    secrets.chmod(mode)
    path = tmp_path / "site.yaml"
    path.write_text(HEAD + "secrets_file: secrets.yaml\n")
    code, _, err = validate(path, capsys)
    assert code == 0
    warning = (f"WARNING wattshift.config: {secrets}: the secrets file is readable by group or others "
               f"(mode {mode:04o}): chmod 600 {secrets}")
    assert (warning in err) is warned, err
    assert "hunter2" not in err


def test_the_journal_and_its_directory_are_private_outside_systemd(tmp_path):
    old = os.umask(0o022)  # a shell's usual umask; systemd's UMask=0077 is not there to help
    try:
        journal = Journal(tmp_path / "state" / "journal.sqlite3")
        journal.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    for made in (tmp_path / "state").iterdir():  # the database and SQLite's -wal/-shm beside it
        assert stat.S_IMODE(made.stat().st_mode) == 0o600, made


def test_a_taken_metrics_port_names_the_address_and_what_to_do(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "site.yaml"
        path.write_text(f"name: s\nbudget_kw: 100\nstate_dir: {tmp_path / 'state'}\nmetrics_listen: 127.0.0.1:{port}\n")
        code = main(["run", "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"cannot serve /metrics on 127.0.0.1:{port} (metrics_listen): Address already in use" in err
    assert "set metrics_listen in the site file to a free HOST:PORT" in err and "Traceback" not in err


def test_the_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_bytes(codecs.BOM_UTF8 + HEAD.encode())
    assert load_site(path, environ={}).budget_kw == 1000


@pytest.mark.parametrize("name", ["latin-1", "utf-16", "5000-digit integer", "lists 5000 deep", "alias bomb",
                                  "a 13th month", "10 MB of unknown keys"])
def test_a_hostile_policy_file_is_refused_so_a_reload_keeps_the_old_policy(tmp_path, name):
    # A reload (SIGHUP or a change on disk) reads through read_policy_file and keeps the policy
    # it has on FileInvalid: any other exception would end the daemon.
    content, message = HOSTILE[name]
    path = tmp_path / "policy.yaml"
    path.write_bytes(content.replace(b"name: s\n", b"policy: merit-order\n", 1) if name != "utf-16" else content)
    if name == "10 MB of unknown keys":  # a policy file has a tighter cap than a site file
        message = f"larger than {MAX_POLICY_BYTES}, the limit for a policy file"
    with pytest.raises(FileInvalid) as caught:
        read_policy_file(path)
    assert message.split(": ", 1)[-1] in str(caught.value)
