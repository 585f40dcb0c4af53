"""Policy files: the shipped examples load; every mistake is named by file, line and key."""

import logging
from pathlib import Path

import pytest

from wattshift.daemon.cli.main import main
from wattshift.daemon.config.policy_file import (
    load_policy_file,
    parse_policy_file,
    read_policy_file,
)
from wattshift.daemon.config.yamlfile import FileInvalid
from wattshift.policies.base import Carried, bare
from wattshift.policies.windows import WindowedPolicy

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "deploy" / "policies").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _keep_logging():
    """``main`` points the root logger at the captured stderr; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def problems(text: str) -> list[str]:
    with pytest.raises(FileInvalid) as caught:
        parse_policy_file(text, "p.yaml")
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_policy_file_loads(path):
    loaded = read_policy_file(path)
    assert loaded.policy.name == path.stem
    # lookahead plans over the announced events instead: a window it cannot see coming would
    # only narrow the site under it once open.
    assert isinstance(bare(loaded.policy), WindowedPolicy) == ("\nwindows:" in path.read_text())


def test_the_four_builtins_are_shipped():
    assert [p.stem for p in SHIPPED] == ["ai-first", "lookahead", "merit-order", "strike-price"]


def test_a_stateful_policy_from_a_file_is_carried(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("policy: strike-price\noptions: {strike_usd_per_mwh: 80}\n")
    assert isinstance(load_policy_file(path), Carried)


def test_a_bad_option_is_named_at_its_line():
    text = "policy: strike-price\noptions:\n  strike_usd_per_mwh: 95\n  hysteresis_usd_per_mwh: -5\n"
    assert problems(text) == ["p.yaml:4: options.hysteresis_usd_per_mwh: Input should be greater than or equal to 0"]


def test_a_misspelt_option_is_named_at_its_line():
    text = "policy: merit-order\noptions:\n  step_watts: 100\n  min_dwel_seconds: 60\n"
    assert problems(text) == ["p.yaml:4: options.min_dwel_seconds: Extra inputs are not permitted"]


def test_a_bad_option_inside_a_window_is_named_there():
    text = """policy: merit-order
windows:
  - name: peak
    cron: "0 15 * 6-9 mon-fri"
    duration_minutes: 60
    options:
      step_watts: 1
"""
    assert problems(text) == ["p.yaml:7: windows[0].options.step_watts: Input should be greater than or equal to 10"]


def test_an_unknown_policy_lists_the_known_ones():
    [problem] = problems("description: x\npolicy: merit_order\n")
    assert problem.startswith("p.yaml:2: policy: unknown policy 'merit_order' (known: ")
    assert "merit-order" in problem


def test_every_shape_error_at_once_with_lines():
    text = """policy: merit-order
colour: blue
windows:
  - name: peak
    cron: "0 15 * 6-9 1-5"
    duration_minutes: 0
    budget_kw: 5
"""
    assert problems(text) == [
        "p.yaml:5: windows[0].cron: day-of-week '1-5': write days as names (mon-fri, sat,sun), "
        "not numbers (got '0 15 * 6-9 1-5')",
        "p.yaml:6: windows[0].duration_minutes: Input should be greater than 0 (got 0)",
        "p.yaml:2: colour: Extra inputs are not permitted",
    ]


def test_not_yaml_and_not_a_mapping():
    assert problems("policy: [unclosed\n")[0].startswith("p.yaml:2: (top level): not valid YAML")
    assert problems("- merit-order\n") == ["p.yaml:1: (top level): expected a mapping of keys at the top level"]


def test_validate_checks_a_policy_file_alone(capsys):
    assert main(["validate", str(ROOT / "deploy" / "policies" / "strike-price.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok\n") and "policy strike-price (5 option(s); windows: tou-evening-peak)" in out


def test_validate_checks_a_site_and_a_policy_and_refuses_a_bad_one(tmp_path, capsys):
    site = ROOT / "deploy" / "site.example.yaml"
    assert main(["validate", str(site), "--policy", str(SHIPPED[0])]) == 0
    assert "policy ai-first" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: strike-price\noptions:\n  curtail_after_minutes: forever\n")
    assert main(["validate", str(site), "--policy", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: options.curtail_after_minutes: Input should be a valid number" in err
    assert "nothing was changed" in err


def test_validate_still_checks_a_site_file_alone(capsys):
    assert main(["validate", str(ROOT / "deploy" / "site.example.yaml")]) == 0
    assert capsys.readouterr().out.startswith("ok\n")
