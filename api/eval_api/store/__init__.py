"""The results store shared by the operator and the runner: its schema (versioned SQL
migrations and `migrate`) and where it is (`StoreSettings`)."""

from eval_api.store.migrate import (
    LATEST_VERSION,
    MIGRATIONS,
    Migration,
    MigrationChanged,
    MigrationError,
    applied_version,
    migrate,
)
from eval_api.store.settings import StoreSettings, StoreSettingsError

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "Migration",
    "MigrationChanged",
    "MigrationError",
    "StoreSettings",
    "StoreSettingsError",
    "applied_version",
    "migrate",
]
