"""Loading policies: built-ins by name, plug-ins by entry point and dotted path, clear errors.

The entry-point test installs the example policy of docs/policies.md the way pip leaves a
distribution on disk (a module plus a .dist-info with entry_points.txt) in a temporary
directory on sys.path, so importlib.metadata's own discovery finds it.
"""

import logging
import re
import sys
from pathlib import Path

import pytest
from factories import S19XP, miner, snapshot

from wattshift.policies.base import Carried, PolicyLoadError
from wattshift.policies.catalog import (
    ENTRY_POINT_GROUP,
    installed_policies,
    known_policy_names,
    make_policy,
    policy_factory,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "policies.md"


def example_source() -> str:
    blocks = re.findall(r"```python\n(# acme_policies\.py\n.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, "docs/policies.md must hold exactly one acme_policies.py example"
    return blocks[0]


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A directory on sys.path holding importable modules and distributions; removed after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("acme_")]:
        del sys.modules[name]


def install(where: Path, module: str, source: str, entry_points: dict[str, str]) -> None:
    (where / f"{module}.py").write_text(source)
    dist = where / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    (dist / "RECORD").write_text("")


def test_builtins_are_registered_by_name():
    for name in ("merit-order", "strike-price", "ai-first"):
        assert make_policy(name, {}).name == name
    assert isinstance(make_policy("strike-price", {}), Carried), "its debounce memory is carried live"


def test_the_documented_example_loads_through_its_entry_point(plugin_dir):
    install(plugin_dir, "acme_policies", example_source(), {"acme-flat": "acme_policies:FlatPolicy"})
    assert "acme-flat" in installed_policies()
    assert "acme-flat" in known_policy_names()
    policy = make_policy("acme-flat", {"watts": 3000})
    assert policy.name == "acme-flat"
    # 5 kW: one miner at 3 kW fits, the most efficient; the S19 XP waits.
    allocation = policy.decide(snapshot([miner("xp", curve=S19XP), miner("a")], budget=5_000))
    assert allocation["a"].watts == 3000 and allocation["xp"].watts == 0
    assert allocation.planned_watts() <= 5_000


def test_the_example_loads_by_dotted_path_and_reports_its_bad_options(plugin_dir):
    (plugin_dir / "acme_dotted.py").write_text(example_source())
    allowed = ["acme_dotted"]  # the site file's policy_modules
    assert make_policy("acme_dotted:FlatPolicy", {"watts": 2500}, allowed).name == "acme-flat"
    with pytest.raises(ValueError, match="option watts: must be a positive number"):
        make_policy("acme_dotted:FlatPolicy", {"watts": -1}, allowed)


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(PolicyLoadError,
                       match=r"unknown policy 'merit_order' \(known: .*ai-first, lookahead, merit-order, strike-price"):
        policy_factory("merit_order")


def test_a_dotted_path_that_does_not_import_is_named_with_the_reason(plugin_dir):
    allowed = ["acme_missing", "acme_broken", "acme_empty"]
    with pytest.raises(PolicyLoadError, match=r"cannot import 'acme_missing': ModuleNotFoundError"):
        policy_factory("acme_missing:factory", allowed)
    (plugin_dir / "acme_broken.py").write_text("raise RuntimeError('licence file not found')\n")
    with pytest.raises(PolicyLoadError, match=r"acme_broken.*RuntimeError: licence file not found"):
        policy_factory("acme_broken:factory", allowed)
    (plugin_dir / "acme_empty.py").write_text("")
    with pytest.raises(PolicyLoadError, match=r"module 'acme_empty' has no 'factory'"):
        policy_factory("acme_empty:factory", allowed)


def test_a_broken_entry_point_is_named(plugin_dir):
    install(plugin_dir, "acme_bad", "import acme_not_there\n", {"acme-bad": "acme_bad:make"})
    with pytest.raises(PolicyLoadError,
                       match=r"'acme-bad' \(entry point acme_bad:make .*\) failed to load: ModuleNotFoundError"):
        make_policy("acme-bad", {})


def test_a_factory_that_does_not_return_a_policy_is_refused(plugin_dir):
    (plugin_dir / "acme_wrong.py").write_text(
        "def number(options):\n    return 42\n\ndef crash(options):\n    raise TypeError('boom')\n"
    )
    with pytest.raises(PolicyLoadError, match="factory returned int, not a Policy"):
        make_policy("acme_wrong:number", {}, ["acme_wrong"])
    with pytest.raises(PolicyLoadError, match="factory failed: TypeError: boom"):
        make_policy("acme_wrong:crash", {}, ["acme_wrong"])


# -- a policy file is data: it names plug-ins, it does not run code (issue 10, item 9) ------------

MARKER = ("import pathlib\npathlib.Path(__file__).with_suffix('.ran').touch()\n"
          "\ndef make(options):\n    raise SystemExit\n")


def test_a_dotted_path_to_a_module_the_site_does_not_allow_is_refused_before_any_import(plugin_dir):
    (plugin_dir / "acme_marker.py").write_text(MARKER)
    for ref in ("acme_marker:make", "subprocess:Popen", "os:system"):
        with pytest.raises(PolicyLoadError, match=r"is not allowed \(policy_modules in the site file: none\)"):
            policy_factory(ref)
    assert not (plugin_dir / "acme_marker.ran").exists() and "acme_marker" not in sys.modules


def test_an_allowed_module_gives_one_attribute_never_a_path_through_its_imports(plugin_dir):
    (plugin_dir / "acme_allowed.py").write_text("import os\n\ndef make(options):\n    return None\n")
    with pytest.raises(PolicyLoadError, match=r"expected package.module:factory \(one attribute, no dots\)"):
        policy_factory("acme_allowed:os.system", ["acme_allowed"])
    with pytest.raises(PolicyLoadError, match="module 'acme' is not allowed"):
        policy_factory("acme:make", ["acme_allowed"])  # a prefix of an allowed name is not allowed
    assert callable(policy_factory("acme_allowed:make", ["acme_allowed"]))


@pytest.fixture
def keep_logging():
    """``main`` points the root logger at the captured stderr; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_validate_runs_no_code_a_policy_file_names(plugin_dir, capsys, keep_logging):
    """``wattshift validate`` on a policy file naming a module: refused, and the module's code
    never ran; with the module in the site file's policy_modules, the same file loads."""
    from wattshift.daemon.cli.main import main

    (plugin_dir / "acme_marker.py").write_text(MARKER)
    (plugin_dir / "acme_ok.py").write_text(example_source())
    policy = plugin_dir / "policy.yaml"
    for ref in ("acme_marker:make", "subprocess:Popen"):
        policy.write_text(f"policy: '{ref}'\n")
        assert main(["validate", str(policy)]) == 2
        assert f"policy: policy {ref!r}: module" in capsys.readouterr().err
    assert not (plugin_dir / "acme_marker.ran").exists() and "acme_marker" not in sys.modules

    policy.write_text("policy: acme_ok:FlatPolicy\noptions: {watts: 2000}\n")
    site = Path(__file__).resolve().parents[2] / "deploy" / "site.example.yaml"
    own_site = plugin_dir / "site.yaml"
    text = site.read_text().replace("secrets_file: secrets.example.yaml",
                                    f"secrets_file: {site.parent}/secrets.example.yaml")
    own_site.write_text(text + "policy_modules: [acme_ok]\n")
    assert main(["validate", str(own_site), "--policy", str(policy)]) == 0, capsys.readouterr().err
    assert "policy acme_ok:FlatPolicy" in capsys.readouterr().out
    own_site.write_text(text)  # the same file, the module no longer allowed
    assert main(["validate", str(own_site), "--policy", str(policy)]) == 2
    assert "module 'acme_ok' is not allowed" in capsys.readouterr().err
