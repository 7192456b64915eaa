"""Every file the pipeline keeps goes through one `Storage`: `LocalStorage` on this machine's disk,
`ObjectStorage` under a bucket, chosen once by `storage_for` from a setting's location."""

from feedback_assets.storage.base import EXPORT, PRIVATE, Modes, Storage
from feedback_assets.storage.factory import storage_for
from feedback_assets.storage.local import LocalStorage
from feedback_assets.storage.objects import ObjectStorage
from feedback_assets.storage.partitions import MissingPartitionError, PartitionStore, split_by_partition

__all__ = [
    "EXPORT",
    "PRIVATE",
    "LocalStorage",
    "MissingPartitionError",
    "Modes",
    "ObjectStorage",
    "PartitionStore",
    "Storage",
    "split_by_partition",
    "storage_for",
]
