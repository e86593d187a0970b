"""Tests of scenario loading and validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from pydantic import ValidationError

from batchsync.emulator import Scenario, load_scenario
from batchsync.emulator.scenario import DEFAULT_SCENARIO_PATH, Range, StatusFault
from tests.emulator_helpers import CLIENT_ID, CLIENT_SECRET, TENANT_ID, scenario_data

REPOSITORY = Path(__file__).resolve().parent.parent
SHIPPED_SCENARIOS = sorted((REPOSITORY / "configs" / "emulator").glob("*.yaml"))


def write_scenario(directory: Path, data: Any, name: str = "scenario.yaml") -> Path:
    """Write ``data`` as YAML and return the file's path."""
    path = directory / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    return path


def load_error(directory: Path, data: Any) -> str:
    """Return the message of the ValueError that loading ``data`` raises."""
    path = write_scenario(directory, data)
    with pytest.raises(ValueError, match=r"scenario\.yaml") as error:
        load_scenario(path)

    return str(error.value)


class TestShippedScenarios:
    """The scenario files shipped in configs/emulator and the package."""

    def test_expected_files(self) -> None:
        """basic, throttled, faults and storm are shipped."""
        names = {path.stem for path in SHIPPED_SCENARIOS}

        assert {"basic", "throttled", "faults", "storm"} <= names

    @pytest.mark.parametrize("path", [*SHIPPED_SCENARIOS, DEFAULT_SCENARIO_PATH], ids=str)
    def test_shipped_file_valid(self, path: Path) -> None:
        """Each shipped file loads."""
        scenario = load_scenario(path)

        assert scenario.apps[0].secrets

    def test_basic_contents(self) -> None:
        """basic.yaml has one tenant, one app with a secret, wildcards and missing ids."""
        scenario = load_scenario(REPOSITORY / "configs" / "emulator" / "basic.yaml")

        assert len(scenario.tenants) == 1
        assert len(scenario.apps) == 1
        assert scenario.directory.service_principals == "*"
        assert scenario.directory.applications == "*"
        assert scenario.directory.missing
        assert scenario.throttling is None
        assert scenario.faults == []

    def test_faults_file_covers_kinds(self) -> None:
        """faults.yaml shows every selectable fault kind."""
        scenario = load_scenario(REPOSITORY / "configs" / "emulator" / "faults.yaml")
        kinds = {fault.kind for fault in scenario.faults}

        assert kinds == {
            "status", "disconnect", "reset", "slow", "html", "non_json", "empty_body",
            "truncated", "unknown_status",
        }  # fmt: skip


class TestScenarioModel:
    """Validation rules of the Scenario model."""

    def test_defaults(self) -> None:
        """A minimal scenario gets the documented defaults."""
        scenario = Scenario.model_validate(
            {
                "tenants": [{"id": TENANT_ID}],
                "apps": [{"client_id": CLIENT_ID, "tenant": TENANT_ID}],
            }
        )

        assert scenario.seed == 0
        assert scenario.latency_ms == 0
        assert scenario.tokens.lifetime_seconds == Range(min=3600, max=5400)
        assert scenario.tokens.clock_skew_seconds == 300
        assert scenario.tokens.throttle.max_per_minute == 0
        assert scenario.throttling is None
        assert scenario.directory.service_principals == []

    def test_guids_lowercased(self) -> None:
        """Ids are stored in lowercase."""
        scenario = Scenario.model_validate(scenario_data(tenants=[{"id": TENANT_ID.upper()}]))

        assert scenario.tenants[0].id == TENANT_ID

    def test_unknown_key_rejected(self) -> None:
        """A misspelled key is an error naming the key."""
        with pytest.raises(ValidationError, match="latency_msec"):
            Scenario.model_validate(scenario_data(latency_msec=5))

    def test_retry_after_number_becomes_text(self) -> None:
        """retry_after given as a number is kept as header text."""
        scenario = Scenario.model_validate(
            scenario_data(faults=[{"kind": "status", "status": 503, "retry_after": 2.5}])
        )
        fault = scenario.faults[0]

        assert isinstance(fault, StatusFault)
        assert fault.retry_after == "2.5"

    def test_models_frozen(self) -> None:
        """Scenarios cannot be changed after validation."""
        scenario = Scenario.model_validate(scenario_data())

        with pytest.raises(ValidationError):
            scenario.seed = 3


class TestLoadScenarioErrors:
    """load_scenario's ValueError names the file, the field and the rule."""

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is reported with its path."""
        path = tmp_path / "absent.yaml"

        with pytest.raises(ValueError, match=r"absent\.yaml: cannot read scenario file"):
            load_scenario(path)

    def test_invalid_yaml(self, tmp_path: Path) -> None:
        """A YAML syntax error is reported with the file and position."""
        path = tmp_path / "broken.yaml"
        path.write_text("seed: [1, 2\n", encoding="utf-8")

        with pytest.raises(ValueError, match=r"broken\.yaml:2:1: invalid YAML: expected ','"):
            load_scenario(path)

    def test_empty_file(self, tmp_path: Path) -> None:
        """An empty file is reported as not a mapping."""
        path = tmp_path / "empty.yaml"
        path.write_text("", encoding="utf-8")

        with pytest.raises(ValueError, match="valid dictionary"):
            load_scenario(path)

    def test_unknown_key(self, tmp_path: Path) -> None:
        """An unknown key is reported with its field path."""
        message = load_error(tmp_path, scenario_data(tokens={"lifetime": 5}))

        assert "scenario.yaml: tokens.lifetime: Extra inputs are not permitted" in message

    def test_bad_guid(self, tmp_path: Path) -> None:
        """A malformed id is reported with its field path and value."""
        message = load_error(tmp_path, scenario_data(tenants=[{"id": "contoso"}]))

        assert "tenants[0].id" in message
        assert "'contoso' is not a GUID" in message

    def test_unknown_tenant_reference(self, tmp_path: Path) -> None:
        """An app whose tenant is not listed is reported with the fix."""
        other = "00000000-0000-4000-8000-000000000001"
        app = {"client_id": CLIENT_ID, "tenant": other, "secrets": ["x"]}
        message = load_error(tmp_path, scenario_data(apps=[app]))

        assert f"apps[0].tenant '{other}' is not listed under tenants" in message

    def test_duplicate_client(self, tmp_path: Path) -> None:
        """Two apps with one client id are reported."""
        app = {"client_id": CLIENT_ID, "tenant": TENANT_ID}
        message = load_error(tmp_path, scenario_data(apps=[app, app]))

        assert "appears more than once" in message

    def test_secret_not_echoed(self, tmp_path: Path) -> None:
        """An invalid secrets field is reported without the value."""
        app = {"client_id": CLIENT_ID, "tenant": TENANT_ID, "secrets": CLIENT_SECRET}
        message = load_error(tmp_path, scenario_data(apps=[app]))

        assert "apps[0].secrets" in message
        assert CLIENT_SECRET not in message

    def test_range_order(self, tmp_path: Path) -> None:
        """A range whose min exceeds its max is reported."""
        message = load_error(tmp_path, scenario_data(latency_ms={"min": 9, "max": 1}))

        assert "min (9.0) must not exceed max (1.0)" in message

    def test_unknown_fault_kind(self, tmp_path: Path) -> None:
        """An unknown fault kind is reported with the field path."""
        message = load_error(tmp_path, scenario_data(faults=[{"kind": "explode"}]))

        assert "faults[0]" in message
        assert "explode" in message

    def test_rate_out_of_range(self, tmp_path: Path) -> None:
        """A fault rate above 1 is reported."""
        message = load_error(tmp_path, scenario_data(faults=[{"kind": "disconnect", "rate": 2}]))

        assert "faults[0].disconnect.rate" in message

    def test_bad_retry_after_shape(self, tmp_path: Path) -> None:
        """An unknown Retry-After shape is reported."""
        message = load_error(tmp_path, scenario_data(throttling={"retry_after": "later"}))

        assert "throttling.retry_after" in message

    def test_missing_certificate(self, tmp_path: Path) -> None:
        """A certificate path that does not exist is reported, resolved from the file."""
        app = {"client_id": CLIENT_ID, "tenant": TENANT_ID, "certificates": ["app.pem"]}
        message = load_error(tmp_path, scenario_data(apps=[app]))

        assert f"certificate file '{tmp_path / 'app.pem'}' does not exist" in message

    def test_invalid_certificate(self, tmp_path: Path) -> None:
        """A certificate file without a PEM certificate is reported."""
        (tmp_path / "app.pem").write_text("not a certificate", encoding="utf-8")
        app = {"client_id": CLIENT_ID, "tenant": TENANT_ID, "certificates": ["app.pem"]}
        message = load_error(tmp_path, scenario_data(apps=[app]))

        assert "is not usable" in message


class TestCertificatePaths:
    """Certificate paths in scenario files."""

    def test_relative_to_scenario_file(self, tmp_path: Path) -> None:
        """A relative certificate path is resolved against the scenario file's directory."""
        authority = trustme.CA()
        (tmp_path / "certs").mkdir()
        authority.cert_pem.write_to_path(str(tmp_path / "certs" / "app.pem"))
        app = {"client_id": CLIENT_ID, "tenant": TENANT_ID, "certificates": ["certs/app.pem"]}
        path = write_scenario(tmp_path, scenario_data(apps=[app]))

        scenario = load_scenario(path)

        assert scenario.apps[0].certificates == [tmp_path / "certs" / "app.pem"]
