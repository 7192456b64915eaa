"""deploy/helm/values.yaml as the Dagster chart reads it: against the chart's own values.schema.json
when a copy of the chart is given (DAGSTER_CHART_DIR, docs/deploy.md, "Checking the values against
the chart"), and always for what this deployment promises: the user deployment's image, no secret
as a plain value, every run in a pod of its own through K8sRunLauncher, and the run logs on object
storage so they outlive the pods."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from feedback_assets_tests.test_deploy_kubernetes import deployment, values

REPO_ROOT = Path(__file__).resolve().parent.parent
VALUES = REPO_ROOT / "deploy" / "helm" / "values.yaml"
CHART_VERSION = re.compile(r"--version (\d+\.\d+\.\d+)")
# A plain env value may name a bucket or a host, never hold a credential: no password or token in a
# URL, no long hex or base64 run such as a key.
CREDENTIAL_IN_VALUE = re.compile(r"://[^/@\s]+:[^/@\s]*@|\b[0-9a-fA-F]{32,}\b|[A-Za-z0-9+/]{40,}={0,2}")
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL|WEBHOOK|SOURCE_URL", re.IGNORECASE)
# Names the code reads that contain a word above but hold no secret.
NOT_SECRET = {"FEEDBACK_HMAC_KEY_ID"}


def merged(defaults: Any, overrides: Any) -> Any:
    """Helm's merge of a values file over the chart's defaults: maps key by key, anything else replaced."""
    if isinstance(defaults, dict) and isinstance(overrides, dict):
        result = copy.deepcopy(defaults)
        for key, value in overrides.items():
            result[key] = merged(defaults.get(key), value)
        return result
    return copy.deepcopy(overrides)


def offline(schema: Any) -> Any:
    """The chart's schema with its references to an outside site (Kubernetes' own types) dropped,
    so it checks offline: those values are then taken as they are, and the chart's own keys are
    still checked in full."""
    if isinstance(schema, dict):
        return {
            key: offline(value)
            for key, value in schema.items()
            if not (key == "$ref" and isinstance(value, str) and not value.startswith("#"))
        }
    if isinstance(schema, list):
        return [offline(item) for item in schema]
    return schema


def test_the_values_file_names_the_chart_version_of_the_projects_dagster() -> None:
    (named,) = set(CHART_VERSION.findall(VALUES.read_text()))
    setup_cfg = (REPO_ROOT / "setup.cfg").read_text()
    assert f"dagster=={named}" in setup_cfg
    assert f"--version {named}" in (REPO_ROOT / "docs" / "deploy.md").read_text()


@pytest.mark.skipif(
    not os.environ.get("DAGSTER_CHART_DIR"),
    reason="DAGSTER_CHART_DIR is not set: no copy of the chart to check against (docs/deploy.md)",
)
def test_the_values_are_valid_against_the_charts_own_schema() -> None:
    chart = Path(os.environ["DAGSTER_CHART_DIR"])
    chart_yaml = yaml.safe_load((chart / "Chart.yaml").read_text())
    (named,) = set(CHART_VERSION.findall(VALUES.read_text()))
    assert chart_yaml["name"] == "dagster" and chart_yaml["version"] == named
    schema = json.loads((chart / "values.schema.json").read_text())
    effective = merged(yaml.safe_load((chart / "values.yaml").read_text()), values())
    validator = jsonschema.Draft7Validator(offline(schema))
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(effective)
    ]
    assert errors == []


def test_the_user_deployment_runs_a_pinned_image_of_this_code_location() -> None:
    image = deployment()["image"]
    assert image["repository"].endswith("/feedback-assets")
    assert isinstance(image["tag"], str) and image["tag"] not in ("", "latest")
    assert image["pullPolicy"] in ("Always", "IfNotPresent", "Never")
    assert deployment()["dagsterApiGrpcArgs"] == ["--module-name", "feedback_assets.definitions"]
    # Run pods take the deployment's image and env: the run launcher names no image of its own.
    assert deployment()["includeConfigInLaunchedRuns"]["enabled"] is True
    assert values()["runLauncher"]["config"]["k8sRunLauncher"].get("image") is None


def test_no_secret_is_a_plain_value_anywhere_in_the_values() -> None:
    def walk(node: Any, path: str) -> list[str]:
        if isinstance(node, dict):
            # An env list entry: the name says what it holds, the value is in plain text.
            if set(node) == {"name", "value"} and isinstance(node["value"], str):
                name, value = node["name"], node["value"]
                found = [f"{path}: {name}"] if SECRET_NAME.search(name) and name not in NOT_SECRET else []
                return found + ([f"{path}: {name}'s value"] if CREDENTIAL_IN_VALUE.search(value) else [])
            return [hit for key, child in node.items() for hit in walk(child, f"{path}/{key}")]
        if isinstance(node, list):
            return [hit for index, child in enumerate(node) for hit in walk(child, f"{path}/{index}")]
        if isinstance(node, str) and CREDENTIAL_IN_VALUE.search(node):
            return [path]
        return []

    chart = values()
    assert walk(chart, "") == []
    # The one password key the chart has stays empty: the database password is in global.postgresqlSecretName.
    assert chart["postgresql"]["postgresqlPassword"] == ""
    assert chart["global"]["postgresqlSecretName"]
    plain = {entry["name"] for entry in deployment()["env"]}
    assert "FEEDBACK_HMAC_KEY" not in plain and "AWS_SECRET_ACCESS_KEY" not in plain
    assert deployment()["envSecrets"] == values()["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]


def test_every_run_is_a_kubernetes_job_launched_by_k8s_run_launcher() -> None:
    launcher = values()["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    config = launcher["config"]["k8sRunLauncher"]
    assert config["loadInclusterConfig"] is True
    assert config["runK8sConfig"]["containerConfig"]["resources"]["limits"]["memory"]


def test_run_logs_go_to_object_storage_so_they_outlive_the_pods() -> None:
    chart = values()
    manager = chart["computeLogManager"]
    assert manager["type"] == "S3ComputeLogManager"
    s3 = manager["config"]["s3ComputeLogManager"]
    assert s3["bucket"] and s3["prefix"]
    # The run pods upload with the credentials they already have; none is written into the values.
    assert not {key for key in s3 if SECRET_NAME.search(key)}
    # The logs sit in the pipeline's private bucket, beside the storage dir (docs/deploy.md, "Storage").
    storage = {entry["name"]: entry["value"] for entry in deployment()["env"]}["FEEDBACK_STORAGE_DIR"]
    assert storage.startswith(f"s3://{s3['bucket']}/")
    # The UI reads them back through a Secret of its own, not the pipeline's.
    assert (
        chart["dagsterWebserver"]["envSecrets"]
        and {"name": "feedback-assets"} not in chart["dagsterWebserver"]["envSecrets"]
    )
