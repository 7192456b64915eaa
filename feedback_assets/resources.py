"""Dagster resources: the pipeline's settings and the stores built from them, read at run time."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from feedback_assets.dedupe_state import DedupeStateStore
from feedback_assets.settings import ConfigError, ExportSettings, settings_from
from feedback_assets.source import FeedbackSource
from feedback_assets.storage import PartitionStore


class FeedbackSettings(dg.ConfigurableResource):
    """Overrides for the FEEDBACK_* environment variables (CONTRACT section 2); unset fields fall
    back to the environment when a run starts. The HMAC key is deliberately not a field: a field's
    value is shown in the UI, so the key is only ever read from FEEDBACK_HMAC_KEY."""

    source_url: str | None = Field(default=None, description="FEEDBACK_SOURCE_URL")
    export_dir: str | None = Field(default=None, description="FEEDBACK_EXPORT_DIR")
    storage_dir: str | None = Field(default=None, description="FEEDBACK_STORAGE_DIR")
    hmac_key_id: str | None = Field(default=None, description="FEEDBACK_HMAC_KEY_ID")
    dedupe_scope: str | None = Field(default=None, description="FEEDBACK_DEDUPE_SCOPE")
    min_feedback_fields: str | None = Field(default=None, description="FEEDBACK_MIN_FEEDBACK_FIELDS")
    include_image_urls: str | None = Field(default=None, description="FEEDBACK_INCLUDE_IMAGE_URLS")
    k_anonymity_threshold: str | None = Field(default=None, description="FEEDBACK_K_ANONYMITY_THRESHOLD")
    k_anonymity_suppress: str | None = Field(default=None, description="FEEDBACK_K_ANONYMITY_SUPPRESS")

    def resolve(self) -> ExportSettings:
        """Validated settings, or a Failure that says what to set; nothing has been read yet."""
        try:
            return settings_from(
                {
                    "FEEDBACK_SOURCE_URL": self.source_url,
                    "FEEDBACK_EXPORT_DIR": self.export_dir,
                    "FEEDBACK_STORAGE_DIR": self.storage_dir,
                    "FEEDBACK_HMAC_KEY_ID": self.hmac_key_id,
                    "FEEDBACK_DEDUPE_SCOPE": self.dedupe_scope,
                    "FEEDBACK_MIN_FEEDBACK_FIELDS": self.min_feedback_fields,
                    "FEEDBACK_INCLUDE_IMAGE_URLS": self.include_image_urls,
                    "FEEDBACK_K_ANONYMITY_THRESHOLD": self.k_anonymity_threshold,
                    "FEEDBACK_K_ANONYMITY_SUPPRESS": self.k_anonymity_suppress,
                }
            )
        except ConfigError as exc:
            raise dg.Failure(description=f"Configuration error: {exc}", allow_retries=False) from None


def source_for(settings: ExportSettings) -> FeedbackSource:
    return FeedbackSource(settings.source, settings.include_image_urls)


def partition_store(settings: ExportSettings) -> PartitionStore:
    return PartitionStore(settings.storage_dir)


def dedupe_state(settings: ExportSettings) -> DedupeStateStore:
    return DedupeStateStore(settings.storage_dir, settings.dedupe_scope, settings.hmac_key_id)
