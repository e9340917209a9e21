"""Server storage behind small interfaces by role: enrollments, per-device command queues, push outcomes.

`MemoryStorage` for tests and virtual-time runs, `SQLiteStorage` (WAL file) as the default, `PostgresStorage`
for several server processes; those load on first use, so importing the pure core (which imports `interface`)
never loads sqlite3 or psycopg.
"""

import importlib
from typing import TYPE_CHECKING

from .interface import (
    FINAL_STATUSES,
    PENDING_STATUSES,
    REPORTABLE_STATUSES,
    CertificateInUseError,
    CheckinStore,
    CommandChannelStore,
    CommandNotFoundError,
    CommandSource,
    CommandStateError,
    CommandStatus,
    Device,
    DeviceDirectory,
    DeviceNotFoundError,
    DuplicateCommandError,
    EnrollmentState,
    EnrollmentStateError,
    Exchange,
    IdentityChange,
    IdentityChangeRefusedError,
    InvalidRecordError,
    NewCommand,
    PushOutcome,
    PushRecord,
    PushStore,
    QueueAdmin,
    QueuedCommand,
    Reported,
    ResultKind,
    ResultOutcome,
    SchemaVersionError,
    Storage,
    StorageClosedError,
    StorageError,
    StorageFullError,
    UserChannel,
    UserChannelStore,
    Visit,
)
from .memory import MemoryStorage

if TYPE_CHECKING:
    from .postgres import PostgresStorage
    from .sqlite import SQLiteStorage
    from .sqlite_schema import SCHEMA_VERSION

_LAZY = {"SQLiteStorage": ".sqlite", "SCHEMA_VERSION": ".sqlite_schema", "PostgresStorage": ".postgres"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FINAL_STATUSES",
    "PENDING_STATUSES",
    "REPORTABLE_STATUSES",
    "SCHEMA_VERSION",
    "CertificateInUseError",
    "IdentityChange",
    "IdentityChangeRefusedError",
    "CheckinStore",
    "CommandChannelStore",
    "CommandNotFoundError",
    "CommandSource",
    "CommandStateError",
    "CommandStatus",
    "Device",
    "DeviceDirectory",
    "DeviceNotFoundError",
    "DuplicateCommandError",
    "EnrollmentState",
    "EnrollmentStateError",
    "Exchange",
    "InvalidRecordError",
    "MemoryStorage",
    "NewCommand",
    "PostgresStorage",
    "PushOutcome",
    "PushRecord",
    "PushStore",
    "QueueAdmin",
    "QueuedCommand",
    "Reported",
    "ResultKind",
    "ResultOutcome",
    "SQLiteStorage",
    "SchemaVersionError",
    "Storage",
    "StorageClosedError",
    "StorageError",
    "StorageFullError",
    "UserChannel",
    "UserChannelStore",
    "Visit",
]
