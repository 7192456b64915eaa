"""The resource every asset and the erasure job share: the settings, checked once per run, and the
source, stores and dedupe state built from them."""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager

import dagster as dg
from pydantic import Field, PrivateAttr

from feedback_assets.dedupe_state import DedupeStateStore
from feedback_assets.failures import EXPLAINED_ERRORS
from feedback_assets.files import storage_lock
from feedback_assets.key_guard import ensure_same_key
from feedback_assets.partitions import load_problems
from feedback_assets.settings import (
    DEMO_SOURCE_PATH,
    MIN_KEY_HEX_DIGITS,
    ConfigError,
    DedupeScopeChoice,
    ExportSettings,
    PseudonymScopeChoice,
    SettingValue,
    TimestampPrecisionChoice,
    check_output_dirs,
    settings_from,
)
from feedback_assets.source import FeedbackSource
from feedback_assets.storage import EXPORT, PRIVATE, PartitionStore, Storage, storage_for

UNSET = (
    "FEEDBACK_{} as the code location loaded it (docs/contract.md, section 2); "
    "left unset, the variable when the run starts, else the contract's default."
)


def _choice(value: enum.StrEnum | None) -> str | None:
    return value.value if value is not None else None


class FeedbackSettings(dg.ConfigurableResource):
    """The pipeline's settings (docs/contract.md, section 2) and the seam between the assets and
    what they read and write.

    A field left unset takes its FEEDBACK_* environment variable when a run starts, else the
    contract's default; definitions.py gives the HMAC key as `dg.EnvVar`, so the UI shows the
    variable's name and never the key.
    """

    source_url: str | None = Field(default=None, description=UNSET.format("SOURCE_URL"))
    export_dir: str | None = Field(default=None, description=UNSET.format("EXPORT_DIR"))
    storage_dir: str | None = Field(default=None, description=UNSET.format("STORAGE_DIR"))
    hmac_key: str | None = Field(
        default=None, description="The pseudonymisation secret: give it as dg.EnvVar, never as a value."
    )
    hmac_key_id: str | None = Field(default=None, description=UNSET.format("HMAC_KEY_ID"))
    dedupe_scope: DedupeScopeChoice | None = Field(default=None, description=UNSET.format("DEDUPE_SCOPE"))
    min_feedback_fields: int | None = Field(default=None, description=UNSET.format("MIN_FEEDBACK_FIELDS"))
    include_image_urls: bool | None = Field(default=None, description=UNSET.format("INCLUDE_IMAGE_URLS"))
    k_anonymity_threshold: int | None = Field(default=None, description=UNSET.format("K_ANONYMITY_THRESHOLD"))
    k_anonymity_suppress: bool | None = Field(default=None, description=UNSET.format("K_ANONYMITY_SUPPRESS"))
    k_anonymity_quasi_identifiers: str | None = Field(
        default=None, description=UNSET.format("K_ANONYMITY_QUASI_IDENTIFIERS")
    )
    timestamp_precision: TimestampPrecisionChoice | None = Field(
        default=None, description=UNSET.format("TIMESTAMP_PRECISION")
    )
    pseudonym_scope: PseudonymScopeChoice | None = Field(default=None, description=UNSET.format("PSEUDONYM_SCOPE"))
    source_retry_seconds: int | None = Field(default=None, description=UNSET.format("SOURCE_RETRY_SECONDS"))
    volume_low_ratio: float | None = Field(default=None, description=UNSET.format("VOLUME_LOW_RATIO"))
    volume_high_ratio: float | None = Field(default=None, description=UNSET.format("VOLUME_HIGH_RATIO"))
    lookback_days: int | None = Field(default=None, description=UNSET.format("LOOKBACK_DAYS"))

    _validated: ExportSettings | None = PrivateAttr(default=None)
    _problem: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Validate the settings, the output directories and the key once, before any step runs.

        A problem is kept, not raised: Dagster would wrap an error raised here in a resource error
        with a traceback, while the first step that asks for the settings fails with the plain message.
        """
        try:
            settings = settings_from(self._given())
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
            }
            ensure_same_key(
                [(storage_for(settings.export_dir, EXPORT), export_format), (storage_for(settings.storage_dir), {})],
                settings.hmac_key_id,
                settings.hmac_key,
            )
        except EXPLAINED_ERRORS as exc:
            self._problem = str(exc)
            return
        self._validated = settings

    def _given(self) -> dict[str, SettingValue | None]:
        return {
            "FEEDBACK_SOURCE_URL": self.source_url,
            "FEEDBACK_EXPORT_DIR": self.export_dir,
            "FEEDBACK_STORAGE_DIR": self.storage_dir,
            "FEEDBACK_HMAC_KEY": self.hmac_key,
            "FEEDBACK_HMAC_KEY_ID": self.hmac_key_id,
            "FEEDBACK_DEDUPE_SCOPE": _choice(self.dedupe_scope),
            "FEEDBACK_MIN_FEEDBACK_FIELDS": self.min_feedback_fields,
            "FEEDBACK_INCLUDE_IMAGE_URLS": self.include_image_urls,
            "FEEDBACK_K_ANONYMITY_THRESHOLD": self.k_anonymity_threshold,
            "FEEDBACK_K_ANONYMITY_SUPPRESS": self.k_anonymity_suppress,
            "FEEDBACK_K_ANONYMITY_QUASI_IDENTIFIERS": self.k_anonymity_quasi_identifiers,
            "FEEDBACK_TIMESTAMP_PRECISION": _choice(self.timestamp_precision),
            "FEEDBACK_PSEUDONYM_SCOPE": _choice(self.pseudonym_scope),
            "FEEDBACK_SOURCE_RETRY_SECONDS": self.source_retry_seconds,
            "FEEDBACK_VOLUME_LOW_RATIO": self.volume_low_ratio,
            "FEEDBACK_VOLUME_HIGH_RATIO": self.volume_high_ratio,
            "FEEDBACK_LOOKBACK_DAYS": self.lookback_days,
        }

    @property
    def settings(self) -> ExportSettings:
        """The validated settings, or the Failure that says what to set; nothing has been read yet."""
        if self._problem is not None:
            raise dg.Failure(description=self._problem, allow_retries=False)
        if self._validated is None:
            raise dg.Failure(description="FeedbackSettings was used outside a run", allow_retries=False)
        return self._validated

    def source(self, log: Callable[[str], None] | None = None) -> FeedbackSource:
        """The source reader; `log` hears of every transient fault and when the next try is."""
        settings = self.settings
        return FeedbackSource(
            settings.source, settings.include_image_urls, retry_seconds=settings.source_retry_seconds, log=log
        )

    def writing(self, log: Callable[[str], None]) -> AbstractContextManager[None]:
        """Held by every export step while it reads and writes the stored files (erasure waits)."""
        return storage_lock(
            self.settings.storage_dir,
            exclusive=False,
            on_wait=lambda: log("waiting for an erase_subjects run to finish with the stored files"),
        )

    def erasing(self, log: Callable[[str], None]) -> AbstractContextManager[None]:
        """Held by erasure while it rewrites the stored and exported files (export steps wait)."""
        return storage_lock(
            self.settings.storage_dir,
            exclusive=True,
            on_wait=lambda: log("waiting for the export steps now running to finish with the stored files"),
        )

    def storage(self) -> Storage:
        """The private storage dir: partitions, dedupe state, subjects, audit log."""
        return storage_for(self.settings.storage_dir, PRIVATE)

    def exports(self) -> Storage:
        """The export directory of the training CSVs, readable by the data science team's group."""
        return storage_for(self.settings.export_dir, EXPORT)

    def partition_store(self) -> PartitionStore:
        """The daily partitions' files; every export step opens them first, so a setting the code
        location could not read when it loaded (partitions.load_problems) fails exactly those runs."""
        problems = load_problems()
        if problems:
            raise dg.Failure(description=problems[0], allow_retries=False)
        return PartitionStore(self.storage())

    def dedupe_state(self) -> DedupeStateStore:
        settings = self.settings
        return DedupeStateStore(self.storage(), settings.dedupe_scope, settings.hmac_key_id)


def settings_in_effect(env: Mapping[str, str] | None = None) -> FeedbackSettings:
    """The resource the code location serves: every non-secret setting as the value it has when the
    code location loads, so the resource's page in the UI shows the settings runs will use.

    The two that can hold secrets are given as `dg.EnvVar`, shown by name and resolved when a run
    starts: the HMAC key, and a source URL taken from the environment (it may carry a password).
    Settings that do not validate are left unset: the run then stops with the message naming the
    setting, as it would have without this.
    """
    environ = os.environ if env is None else env
    key = dg.EnvVar("FEEDBACK_HMAC_KEY")
    # A stand-in key, only so the other settings can be validated where the key is not needed.
    try:
        settings = settings_from({}, {**environ, "FEEDBACK_HMAC_KEY": "0" * MIN_KEY_HEX_DIGITS})
    except ConfigError:
        return FeedbackSettings(hmac_key=key)
    return FeedbackSettings(
        source_url=dg.EnvVar("FEEDBACK_SOURCE_URL")
        if environ.get("FEEDBACK_SOURCE_URL")
        else f"sqlite:///{DEMO_SOURCE_PATH}",
        export_dir=str(settings.export_dir),
        storage_dir=str(settings.storage_dir),
        hmac_key=key,
        hmac_key_id=settings.hmac_key_id,
        dedupe_scope=DedupeScopeChoice(settings.dedupe_scope),
        min_feedback_fields=settings.min_feedback_fields,
        include_image_urls=settings.include_image_urls,
        k_anonymity_threshold=settings.k_anonymity_threshold,
        k_anonymity_suppress=settings.suppress_small_groups,
        k_anonymity_quasi_identifiers=",".join(settings.quasi_identifiers),
        timestamp_precision=TimestampPrecisionChoice(settings.timestamp_precision),
        pseudonym_scope=PseudonymScopeChoice(settings.pseudonym_scope),
        source_retry_seconds=settings.source_retry_seconds,
        volume_low_ratio=settings.volume_low_ratio,
        volume_high_ratio=settings.volume_high_ratio,
        lookback_days=settings.lookback_days,
    )
