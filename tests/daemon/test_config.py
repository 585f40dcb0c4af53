"""Site files: every mistake named with file, line, key and reason; secrets never leak."""

from pathlib import Path

import pytest

from wattshift.daemon.cli.main import main
from wattshift.daemon.config.site import expand_addresses, load_site
from wattshift.daemon.config.yamlfile import FileInvalid

GOOD = """\
name: north-barn
budget_kw: 1000
reserve_kw: 20
circuits:
  - name: transformer-1
    limit_kw: 600
    circuits:
      - name: container-a
        limit_kw: 300
miners:
  - circuit: container-a
    addresses: 10.0.0.1-10.0.0.40
    firmware: braiins
    credentials: braiins
  - addresses: [10.0.1.0/30, 10.0.2.9]
secrets_file: secrets.yaml
"""


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    (tmp_path / "secrets.yaml").write_text("braiins: {username: root, password: hunter2}\n")
    return tmp_path


def write(directory: Path, text: str) -> Path:
    path = directory / "site.yaml"
    path.write_text(text)
    return path


def test_a_good_file_loads_with_watts_inside(site_dir):
    site = load_site(write(site_dir, GOOD), environ={})
    assert site.budget_watts == 1_000_000
    assert site.circuit_parents()["container-a"] == "transformer-1"
    assert site.circuit_limits()["container-a"] == 300_000
    assert sum(1 for g in site.miners for _ in g.hosts()) == 40 + 2 + 1
    assert site.credentials["braiins"].password.get_secret_value() == "hunter2"


def test_validate_prints_ok_and_a_summary_without_secrets(site_dir, capsys):
    assert main(["validate", str(write(site_dir, GOOD))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok\n")
    assert "container-a: limit 300 kW, 40 miners" in out
    assert "hunter2" not in out and "hunter2" not in repr(load_site(site_dir / "site.yaml", environ={}))


def test_every_error_names_file_line_key_and_reason(site_dir, capsys):
    bad = GOOD.replace("limit_kw: 300", "limit_kw: -3").replace("firmware: braiins", "firmware: braiinz")
    path = write(site_dir, bad)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:9: circuits[0].circuits[0].limit_kw: Input should be greater than 0 (got -3)" in err
    assert f"{path}:13: miners[0].firmware: Input should be" in err and "(got 'braiinz')" in err
    assert "2 problem(s); nothing was changed" in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("circuit: container-a", "circuit: container-z"), "'container-z' is not a circuit"),
        (("reserve_kw: 20", "reserve_kw: 2000"), "reserve_kw: must be below budget_kw (1000) (got 2000)"),
        (("10.0.2.9", "10.0.0.7"), "miners[1].addresses: 10.0.0.7 is already listed as miners[0]"),
        (("10.0.2.9", "10.0.2.300"), "address '10.0.2.300'"),
        (("credentials: braiins", "credentials: luxos"), "'luxos' is not in the secrets file"),
        (("name: container-a", "name: transformer-1"), "circuit names must be unique"),
        (("budget_kw: 1000", "budget_kw: 1000\nbudget_kwh: 3"), "budget_kwh: Extra inputs are not permitted"),
        (("name: north-barn", "name: [oops"), "not valid YAML"),
        (("secrets_file:", "drivers: {telemetry_workers: 17}\nsecrets_file:"),
         "drivers.telemetry_workers: Input should be less than or equal to 16 (got 17)"),
        (("secrets_file:", "drivers: {telemetry_workers: -1}\nsecrets_file:"),
         "drivers.telemetry_workers: Input should be greater than or equal to 0 (got -1)"),
        (("secrets_file:", "drivers: {telemetry_workers: '2'}\nsecrets_file:"),
         "drivers.telemetry_workers: Input should be a valid integer (got '2')"),
        (("secrets_file:", "drivers: {telemetry_workers: true}\nsecrets_file:"),
         "drivers.telemetry_workers: Input should be a valid integer (got True)"),
    ],
)
def test_bad_files_are_rejected_with_the_reason(site_dir, change, message):
    with pytest.raises(FileInvalid) as err:
        load_site(write(site_dir, GOOD.replace(*change)), environ={})
    assert message in str(err.value)


def test_telemetry_workers_default_to_polling_in_the_daemons_process(site_dir):
    assert load_site(write(site_dir, GOOD), environ={}).drivers.telemetry_workers == 0
    two = GOOD.replace("secrets_file:", "drivers: {telemetry_workers: 2}\nsecrets_file:")
    assert load_site(write(site_dir, two), environ={}).drivers.telemetry_workers == 2


def test_passwords_in_the_site_file_are_refused(site_dir):
    with pytest.raises(FileInvalid, match="passwords go in the secrets file"):
        load_site(write(site_dir, GOOD + "credentials: {braiins: {password: x}}\n"), environ={})


def test_the_environment_supplies_or_overrides_a_secret(site_dir):
    site = load_site(write(site_dir, GOOD), environ={"WATTSHIFT_SECRET_BRAIINS": "from-env"})
    assert site.credentials["braiins"].password.get_secret_value() == "from-env"
    assert site.credentials["braiins"].username == "root"


def test_address_ranges_expand_and_bad_ones_explain():
    assert list(expand_addresses("127.1.0.253-127.1.1.1")) == ["127.1.0.253", "127.1.0.254", "127.1.1.1"]
    with pytest.raises(ValueError, match="ends before it starts"):
        list(expand_addresses("10.0.0.9-10.0.0.1"))


def test_the_shipped_example_is_valid(capsys):
    example = Path(__file__).parents[2] / "deploy" / "site.example.yaml"
    assert main(["validate", str(example)]) == 0, capsys.readouterr().err


def _gpu_site(tmp_path, extra: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(
        "name: gpu-site\nbudget_kw: 100\n"
        "gpu_nodes:\n  - {name: gpu-01, gpus: 0-7}\n" + extra
    )
    return path


def test_a_job_class_valued_at_a_market_without_a_rate_is_refused(tmp_path):
    path = _gpu_site(tmp_path, "jobs:\n  classes:\n    - {match: '*', market: H100}\n")
    with pytest.raises(FileInvalid) as err:
        load_site(path, environ={})
    assert "jobs.classes[0].market: 'H100' has no rate" in str(err.value)


def test_gpu_nodes_and_job_classes_load(tmp_path):
    path = _gpu_site(
        tmp_path,
        "jobs:\n  classes:\n    - {match: 'rent-*', tier: firm, rate_usd_per_gpu_hour: 2.4}\n"
        "    - {match: '*', market: H100}\n"
        "prices:\n  gpu_rates_usd_per_gpu_hour:\n    H100: {source: fixed, value: 2.35}\n",
    )
    site = load_site(path, environ={})
    assert site.gpu_nodes[0].selection() == list(range(8))
    assert site.jobs.class_for("rent-42").tier == "firm"
    assert site.jobs.class_for("train-7").market == "H100"


@pytest.mark.parametrize(
    ("node", "reason"),
    [
        ("{name: gpu-01, gpus: 7-0}", "index range"),
        ("{name: gpu-01, gpus: 0-99999999}", "GPU indices go up to 63"),  # refused, not expanded
        ("{name: gpu-01, gpus: [" + ", ".join(map(str, range(65))) + "]}", "at most 64 items"),
        ("{name: gpu-01, circuit: nowhere}", "'nowhere' is not a circuit"),
        ("{name: gpu-01, host_idle_kw: 2, host_max_kw: 1}", "below host_idle_kw"),
    ],
)
def test_bad_gpu_nodes_name_the_field(tmp_path, node, reason):
    path = tmp_path / "site.yaml"
    path.write_text(f"name: s\nbudget_kw: 100\ngpu_nodes:\n  - {node}\n")
    with pytest.raises(FileInvalid) as err:
        load_site(path, environ={})
    assert reason in str(err.value)
