"""The Grafana dashboards: their structure, and every query they run, against a real Prometheus
(Debian's package) scraping a real `wattshift demo` once a second.

The demo runs with its MQTT side (a private Mosquitto and a simulated site meter), so the
panels on the broker link and the meter have data too. Each panel target (one test each) is
evaluated as Grafana would for a time-series panel (a range query over the demo's run, template
variables at "All", $__rate_interval a few scrapes wide); a panel whose query returns nothing
fails the test.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
ALERT_RULES = ROOT / "deploy" / "prometheus" / "wattshift-alerts.yml"

# Grafana's $__rate_interval is max(4 x scrape interval, $__interval + scrape interval).
SCRAPE_S = 1
SUBSTITUTE = {"$__rate_interval": f"{4 * SCRAPE_S + 1}s", "$__interval": f"{SCRAPE_S}s", "$__range": "1m"}
DEMO_SECONDS = 20


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def expand(expr: str, variables: list[str]) -> str:
    """Template variables at "All" (allValue .+) and Grafana's interval macros, as Grafana does."""
    for macro, value in SUBSTITUTE.items():
        expr = expr.replace(macro, value)
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", ".+").replace("$" + name, ".+")
    assert "$" not in expr, f"unexpanded variable in {expr!r}"
    return expr


def queries() -> list[tuple[str, str, list[str]]]:
    """(dashboard: panel or annotation title [refId], its expression, the variables in scope)."""
    out = []
    for path in DASHBOARDS:
        board = load(path)
        variables = [v["name"] for v in board["templating"]["list"]]
        for panel in board["panels"]:
            for target in panel["targets"]:
                out.append((f"{path.stem}: {panel['title']} [{target['refId']}]", target["expr"], variables))
        for note in board["annotations"]["list"]:
            out.append((f"{path.stem}: annotation {note['name']}", note["expr"], variables))
    return out


# -- structure ----------------------------------------------------------------------------------

def provisioned_datasource_uid() -> str:
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "wattshift.yaml").read_text())["datasources"]
    prometheus = [s for s in sources if s["type"] == "prometheus"]
    assert len(prometheus) == 1
    return str(prometheus[0]["uid"])


def test_three_dashboards_with_unique_uids_and_titles():
    boards = [load(p) for p in DASHBOARDS]
    assert {b["uid"] for b in boards} == {"wattshift-site", "wattshift-fleet", "wattshift-events"}
    assert len({b["title"] for b in boards}) == len(boards)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_structure(path):
    board = load(path)
    uid = provisioned_datasource_uid()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    titles = [p["title"] for p in board["panels"]]
    assert len(titles) == len(set(titles)), "two panels share a title"
    for panel in board["panels"]:
        where = f"{path.name}: panel {panel['id']} {panel['title']!r}"
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, where
        assert panel["targets"], f"{where}: no query"
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), f"{where}: duplicate refId"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, where
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, f"{where}: {grid}"
        assert panel.get("description"), f"{where}: say what the panel shows"
    for variable in board["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid
    for note in board["annotations"]["list"]:
        assert note["datasource"]["uid"] == uid


def test_the_dashboard_provider_loads_json_files():
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "wattshift.yaml").read_text())["providers"]
    assert [p["type"] for p in providers] == ["file"]
    assert providers[0]["options"]["path"].startswith("/")


# -- a real Prometheus scraping the demo --------------------------------------------------------

def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def wait_for(what: str, check: Callable[[], bool], timeout: float, proc: subprocess.Popen[Any], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what}: process exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{what}: not ready in {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Scraped:
    def __init__(self, base: str, start: float, end: float) -> None:
        self.base, self.start, self.end = base, start, end

    def query_range(self, expr: str) -> list[Any]:
        params = urllib.parse.urlencode({"query": expr, "start": self.start, "end": self.end, "step": SCRAPE_S})
        answer = get_json(f"{self.base}/api/v1/query_range?{params}")
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def series(self, match: str) -> list[dict[str, str]]:
        params = urllib.parse.urlencode({"match[]": match, "start": self.start, "end": self.end})
        return list(get_json(f"{self.base}/api/v1/series?{params}")["data"])


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus missing: `make test` installs Debian's package")
    tmp = tmp_path_factory.mktemp("grafana")
    metrics = f"127.0.22.10:{free_port('127.0.22.10')}"
    web = f"127.0.22.11:{free_port('127.0.22.11')}"
    rules = tmp / "wattshift-alerts.yml"
    shutil.copy(ALERT_RULES, rules)  # the shipped rules must load in a real Prometheus too
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "wattshift", "static_configs": [{"targets": [metrics]}]}],
    }))
    prom_log = tmp / "prometheus.log"
    demo_log = tmp / "demo.log"
    with prom_log.open("w") as plog, demo_log.open("w") as dlog:
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address={web}", "--storage.tsdb.retention.time=1h"],
            stdout=plog, stderr=subprocess.STDOUT,
        )
        demo: subprocess.Popen[Any] | None = None
        try:
            base = f"http://{web}"
            wait_for("prometheus", lambda: urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200,
                     60, prometheus, prom_log)
            start = time.time()
            demo = subprocess.Popen(
                [sys.executable, "-m", "wattshift.daemon.cli", "demo", "--miners", "8", "--tick", "1",
                 "--duration", str(DEMO_SECONDS), "--metrics-listen", metrics,
                 "--first-address", "127.0.26.1", "--state-dir", str(tmp / "state"), "--mqtt", "on"],
                stdout=dlog, stderr=subprocess.STDOUT,
            )
            # Half way, an operator edits the demo's policy file: the reload panels need one.
            policy = tmp / "state" / "policy.yaml"
            wait_for("the demo's policy file", policy.exists, 60, demo, demo_log)
            time.sleep(DEMO_SECONDS / 2)
            policy.write_text(policy.read_text().replace("hysteresis_usd_per_mwh: 2", "hysteresis_usd_per_mwh: 3"))
            code = demo.wait(timeout=DEMO_SECONDS + 120)
            end = time.time()
            assert code == 0, demo_log.read_text()[-3000:]
            result = Scraped(base, start, end)
            scrapes = result.query_range('up{job="wattshift"} == 1')
            assert scrapes and len(scrapes[0]["values"]) >= DEMO_SECONDS // 2, (
                f"too few successful scrapes:\n{prom_log.read_text()[-3000:]}")
            yield result
        finally:
            if demo is not None:
                stop(demo)
            stop(prometheus)


@pytest.mark.parametrize("name, expr, variables", queries(), ids=[q[0] for q in queries()])
def test_every_panel_query_returns_data(scraped, name, expr, variables):
    assert scraped.query_range(expand(expr, variables)), f"{name}: returned nothing from the demo: {expr}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_template_variable_has_values(scraped, path):
    board = load(path)
    names = [v["name"] for v in board["templating"]["list"]]
    for variable in board["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"])
        assert match, variable["query"]
        selector = expand(match.group(1), names)
        values = {s.get(match.group(2)) for s in scraped.series(selector)} - {None}
        assert values, f"{path.name}: ${variable['name']} has no values ({selector})"


def test_the_shipped_alert_rules_load_and_evaluate_in_prometheus(scraped):
    rules = get_json(f"{scraped.base}/api/v1/rules")["data"]["groups"]
    states = {r["name"]: r["health"] for g in rules for r in g["rules"]}
    assert states and all(h == "ok" for h in states.values()), states
