"""The resources the assets, checks and jobs name: the settings, checked once per run, and the
small resources built on them (the source, the stored files and their lock, the dedupe state), and
the alert sensor's settings.

No `from __future__ import annotations` here: Dagster reads a resource's field types as classes to
let a field that names the settings resource take it as a partial (`resources_for`).
"""

import enum
import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

import dagster as dg
from pydantic import Field, PrivateAttr, create_model

from feedback_assets.dedupe_state import DedupeStateStore
from feedback_assets.failures import EXPLAINED_ERRORS
from feedback_assets.key_guard import ensure_same_key
from feedback_assets.partitions import load_problems
from feedback_assets.settings import AlertSettings, ExportSettings, check_output_dirs
from feedback_assets.settings_fields import (
    ConfigError,
    Setting,
    SettingValue,
    declared,
    read,
    read_leniently,
    read_setting,
)
from feedback_assets.source import FeedbackSource, open_source
from feedback_assets.storage import PartitionStore, Storage
from feedback_assets.storage_lock import storage_lock

UNSET = (
    "{} as the code location loaded it (docs/contract.md, section 2); "
    "left unset, the variable when the run starts, else the contract's default."
)
SECRET = "{} (docs/contract.md, section 2): give it as dg.EnvVar, never as a value."
RUN_SETTINGS = declared(ExportSettings)


def _config_type(field: str, declared_type: Any) -> Any:
    """The type a resource field takes for a setting declared as `declared_type`: Dagster's config
    knows numbers, booleans, text and Enums (not Literals), each left unset as None."""
    if get_origin(declared_type) is Literal:
        name = "".join(part.title() for part in field.split("_")) + "Choice"
        choices: Any = enum.StrEnum(name, {choice: choice for choice in get_args(declared_type)})  # type: ignore[misc]
        return choices | None
    return (declared_type if declared_type in (int, float, bool) else str) | None


def _field(name: str, setting: Setting) -> tuple[Any, Any]:
    described = SECRET if setting.secret and setting.default is None else UNSET
    config_type = _config_type(setting.field, ExportSettings.model_fields[name].annotation)
    return config_type, Field(default=None, description=described.format(setting.variable))


# One field per setting of a run, named after its variable: declared in settings.py, not here. Type
# checkers see a resource without fields; Dagster and pydantic see these.
if TYPE_CHECKING:
    _Fields = dg.ConfigurableResource
else:
    _Fields = create_model(
        "FeedbackSettingsFields",
        __base__=dg.ConfigurableResource,
        __module__=__name__,
        **{setting.field: _field(name, setting) for name, setting in RUN_SETTINGS.items()},
    )


class FeedbackSettings(_Fields):
    """The pipeline's settings (docs/contract.md, section 2), checked once per run: the one place
    the FEEDBACK_* variables become `ExportSettings`; the resources below hand out what is built on them.

    A field left unset takes its FEEDBACK_* environment variable when a run starts, else the
    contract's default; definitions.py gives the HMAC key as `dg.EnvVar`, so the UI shows the
    variable's name and never the key.
    """

    if TYPE_CHECKING:

        def __init__(self, **fields: SettingValue | enum.StrEnum | dg.EnvVar | None) -> None: ...

        def __getattr__(self, field: str) -> SettingValue | enum.StrEnum | dg.EnvVar | None: ...

    _validated: ExportSettings | None = PrivateAttr(default=None)
    _problem: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Validate the settings, the output directories and the key once, before any step runs.

        A problem is kept, not raised: Dagster would wrap an error raised here in a resource error
        with a traceback, while the first step that asks for the settings fails with the plain message.
        """
        try:
            settings = read(ExportSettings, self._given())
        except ConfigError as exc:
            self._problem = f"Configuration error: {exc}"
            return
        try:
            for warning in check_output_dirs(settings):
                if context.log is not None:
                    context.log.warning(warning)
            export_format = {
                "timestamp_precision": settings.timestamp_precision,
                "pseudonym_scope": settings.pseudonym_scope,
                "split": str(settings.split),
            }
            ensure_same_key(
                [(settings.export_dir, export_format), (settings.storage_dir, {})],
                settings.hmac_key_id,
                settings.hmac_key,
            )
        except EXPLAINED_ERRORS as exc:
            self._problem = str(exc)
            return
        self._validated = settings

    def _given(self) -> dict[str, SettingValue | None]:
        given = {setting.variable: getattr(self, setting.field) for setting in RUN_SETTINGS.values()}
        return {name: value.value if isinstance(value, enum.StrEnum) else value for name, value in given.items()}

    @property
    def settings(self) -> ExportSettings:
        """The validated settings, or the Failure that says what to set; nothing has been read yet."""
        if self._problem is not None:
            raise dg.Failure(description=self._problem, allow_retries=False)
        if self._validated is None:
            raise dg.Failure(description="FeedbackSettings was used outside a run", allow_retries=False)
        return self._validated


class FeedbackSourceResource(dg.ConfigurableResource):
    """The app's database (FEEDBACK_SOURCE_URL), read as the run's settings say."""

    feedback_settings: FeedbackSettings

    def reader(self, log: Callable[[str], None] | None = None) -> FeedbackSource:
        """The source reader; `log` hears of every transient fault and when the next try is."""
        settings = self.feedback_settings.settings
        return open_source(
            settings.source, settings.include_image_urls, retry_seconds=settings.source_retry_seconds, log=log
        )


class StorageResource(dg.ConfigurableResource):
    """The private storage dir (FEEDBACK_STORAGE_DIR), the export dir (FEEDBACK_EXPORT_DIR) and the
    lock every step holds on the stored files."""

    feedback_settings: FeedbackSettings

    def storage(self) -> Storage:
        """The private storage dir: partitions, dedupe state, subjects, audit log."""
        return self.feedback_settings.settings.storage_dir

    def exports(self) -> Storage:
        """The export directory of the training CSVs, readable by the data science team's group."""
        return self.feedback_settings.settings.export_dir

    def partition_store(self) -> PartitionStore:
        """The daily partitions' files; every export step opens them first, so a setting the code
        location could not read when it loaded (partitions.load_problems) fails exactly those runs."""
        problems = load_problems()
        if problems:
            raise dg.Failure(description=problems[0], allow_retries=False)
        return PartitionStore(self.storage())

    def writing(self, log: Callable[[str], None], instance: dg.DagsterInstance) -> AbstractContextManager[None]:
        """Held by every export step while it reads and writes the stored files (erasure waits); in
        the instance's database when that is PostgreSQL (storage_lock.py)."""
        return storage_lock(
            instance,
            self.storage(),
            exclusive=False,
            on_wait=lambda: log("waiting for an erase_subjects run to finish with the stored files"),
        )

    def erasing(self, log: Callable[[str], None], instance: dg.DagsterInstance) -> AbstractContextManager[None]:
        """Held by erasure while it rewrites the stored and exported files (export steps wait)."""
        return storage_lock(
            instance,
            self.storage(),
            exclusive=True,
            on_wait=lambda: log("waiting for the export steps now running to finish with the stored files"),
        )


class DedupeStateResource(dg.ConfigurableResource):
    """The dedupe state in the storage dir: the keys each day owns, under FEEDBACK_DEDUPE_SCOPE and
    the key FEEDBACK_HMAC_KEY_ID names."""

    feedback_settings: FeedbackSettings

    def store(self) -> DedupeStateStore:
        settings = self.feedback_settings.settings
        return DedupeStateStore(settings.storage_dir, settings.dedupe_scope, settings.hmac_key_id)


class AlertSettingsResource:
    """FEEDBACK_UI_URL and FEEDBACK_ALERT_WEBHOOK_URL, for the failure sensor in the daemon, which
    holds no HMAC key: so they are not the run's settings.

    A plain object (`dg.ResourceParam`), not a ConfigurableResource: it has nothing to configure,
    and Dagster 1.13 warns (PydanticDeprecatedSince20) when one without fields is made."""

    def read(self) -> tuple[AlertSettings, dict[str, str]]:
        """Read at each tick; a bad value keeps its default and is returned as the problem, never
        raised: the sensor must keep watching."""
        return read_leniently(AlertSettings)


def resources_for(settings: FeedbackSettings) -> dict[str, Any]:
    """Every resource the code location serves, on `settings`; tests and benchmarks pass one
    settings object through this too.

    The others name the settings resource given as a partial: a nested resource given whole is set
    up again inside each resource that names it (the settings checked once for each, and a change
    made in the Launchpad seen by none), while a partial one is Dagster's pointer to the top-level
    `feedback_settings`, set up once a run."""
    given = {field: getattr(settings, field) for field in settings.model_fields_set}
    shared: Any = FeedbackSettings.configure_at_launch(**given)
    return {
        "feedback_settings": shared,
        "feedback_source": FeedbackSourceResource(feedback_settings=shared),
        "feedback_storage": StorageResource(feedback_settings=shared),
        "dedupe_state": DedupeStateResource(feedback_settings=shared),
        "alert_settings": AlertSettingsResource(),
    }


def _shown(value: object) -> SettingValue:
    """A parsed setting as the resource field gives it."""
    if isinstance(value, tuple):
        return ",".join(value)
    return value if isinstance(value, str | int | float | bool) else str(value)


def settings_in_effect(env: Mapping[str, str] | None = None) -> FeedbackSettings:
    """The resource the code location serves: every non-secret setting as the value it has when the
    code location loads, so the resource's page in the UI shows the settings runs will use.

    The settings that can hold secrets are given as `dg.EnvVar`, shown by name and resolved when a
    run starts: the HMAC key, and a source URL taken from the environment (it may carry a password).
    Settings that do not validate are left unset: the run then stops with the message naming the
    setting, as it would have without this.
    """
    environ = os.environ if env is None else env
    # A secret's value is never read here: by name when the environment sets it, else its default.
    secrets: dict[str, str | dg.EnvVar] = {
        setting.field: dg.EnvVar(setting.variable)
        if environ.get(setting.variable) or setting.default is None
        else setting.default
        for setting in RUN_SETTINGS.values()
        if setting.secret
    }
    shown: dict[str, SettingValue | dg.EnvVar] = {}
    for name, setting in RUN_SETTINGS.items():
        if setting.field in secrets:
            continue
        try:
            shown[setting.field] = _shown(read_setting(ExportSettings, name, environ))
        except ConfigError:
            return FeedbackSettings(**secrets)
    return FeedbackSettings(**shown, **secrets)
