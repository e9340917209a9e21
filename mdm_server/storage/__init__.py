"""Server storage behind one small interface: enrollments, per-device command queues, push outcomes.

`MemoryStorage` for tests and virtual-time runs, `SQLiteStorage` (WAL file) as the default.
"""

from .interface import (
    FINAL_STATUSES,
    PENDING_STATUSES,
    REPORTABLE_STATUSES,
    CertificateInUseError,
    CommandNotFoundError,
    CommandSource,
    CommandStateError,
    CommandStatus,
    Device,
    DeviceNotFoundError,
    DuplicateCommandError,
    EnrollmentState,
    EnrollmentStateError,
    InvalidRecordError,
    NewCommand,
    PushOutcome,
    PushRecord,
    QueuedCommand,
    ResultKind,
    ResultOutcome,
    SchemaVersionError,
    Storage,
    StorageClosedError,
    StorageError,
)
from .memory import MemoryStorage
from .sqlite import SQLiteStorage
from .sqlite_schema import SCHEMA_VERSION

__all__ = [
    "FINAL_STATUSES",
    "PENDING_STATUSES",
    "REPORTABLE_STATUSES",
    "SCHEMA_VERSION",
    "CertificateInUseError",
    "CommandNotFoundError",
    "CommandSource",
    "CommandStateError",
    "CommandStatus",
    "Device",
    "DeviceNotFoundError",
    "DuplicateCommandError",
    "EnrollmentState",
    "EnrollmentStateError",
    "InvalidRecordError",
    "MemoryStorage",
    "NewCommand",
    "PushOutcome",
    "PushRecord",
    "QueuedCommand",
    "ResultKind",
    "ResultOutcome",
    "SQLiteStorage",
    "SchemaVersionError",
    "Storage",
    "StorageClosedError",
    "StorageError",
]
