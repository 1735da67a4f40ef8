"""The one exception hierarchy of psra-bench.

Every error a user can provoke derives from :class:`PsraBenchError`; its ``str()`` is one
sentence naming the bad value and what is allowed, so the CLI can print it without a traceback.
Messages never contain passwords: DSNs and URLs are shown through ``settings.redact``.
"""

from __future__ import annotations

__all__ = [
    "PsraBenchError",
    "ConfigError",
    "ServiceError",
    "DatabaseConnectionError",
    "MigrationError",
    "SeedError",
    "NotOwnedError",
    "CacheError",
    "CacheSerializationError",
    "InputError",
    "JobError",
    "JobNotFoundError",
    "ParameterError",
    "MeasurementError",
    "RuleDefinitionError",
    "JobInputError",
    "JobPayloadTooLarge",
    "JobStoreError",
    "ResourceMissingError",
    "NotebookFailed",
]


class PsraBenchError(Exception):
    """Base class of every error psra-bench raises on purpose."""


class ConfigError(PsraBenchError):
    """A setting (environment variable or option) has a value that is not allowed."""

    def __init__(self, variable: str, value: object, allowed: str) -> None:
        self.variable = variable
        self.value = value
        self.allowed = allowed
        super().__init__(f"{variable}={value!r} is not valid: {allowed}.")


class ServiceError(PsraBenchError):
    """An embedded server (PostgreSQL or Valkey) could not be started, found or stopped."""

    def __init__(self, service: str, message: str) -> None:
        self.service = service
        super().__init__(f"{service}: {message}")


class DatabaseConnectionError(PsraBenchError):
    """A server named by the settings cannot be reached."""

    def __init__(self, service: str, host: str, port: int | None, reason: str) -> None:
        self.service = service
        self.host = host
        self.port = port
        where = f"{host}:{port}" if port else host
        super().__init__(f"cannot connect to {service} at {where}: {reason}")


class MigrationError(PsraBenchError):
    """A migration cannot be applied, rolled back or verified."""

    def __init__(self, migration: str, message: str, index: str | None = None) -> None:
        self.migration = migration
        self.index = index
        super().__init__(f"migration {migration}: {message}")


class SeedError(PsraBenchError):
    """Seeding was refused or failed (for example: verdicts already present)."""


class NotOwnedError(PsraBenchError):
    """psra-bench refused to write into a database it does not own (nothing was written)."""

    def __init__(self, database: str, reason: str, action: str | None = None, remedy: str | None = None) -> None:
        self.database = database
        self.reason = reason
        self.action = action
        doing = f" ({action})" if action else ""
        remedy = remedy or (
            f"to let it, hand the database over with `psra-bench handover --database {database}` "
            "(or point it at a database of its own)"
        )
        super().__init__(f"psra-bench will not write into database {database!r}{doing}: {reason}; {remedy}")


class CacheError(PsraBenchError):
    """A cache operation was used wrongly (the cache never raises for a dead server)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


class CacheSerializationError(CacheError):
    """A value or argument cannot be serialized to JSON for the named key."""


class InputError(PsraBenchError):
    """An assessment or API input field has a value that is not allowed."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is not valid: {allowed}.")


class JobError(PsraBenchError):
    """A job operation failed (unknown job type, bad priority, bad TTL...)."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        self.job_id = job_id
        super().__init__(message)


class JobNotFoundError(JobError):
    """No job with this id exists (never submitted, or expired after its TTL)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} does not exist (never submitted, or expired)", job_id)


class ParameterError(PsraBenchError):
    """A CLI flag, notebook parameter or params-file key has a value that is not allowed."""

    def __init__(self, name: str, value: object, allowed: str) -> None:
        self.name = name
        self.value = value
        self.allowed = allowed
        super().__init__(f"{name}={value!r} is not valid: {allowed}.")


class MeasurementError(PsraBenchError):
    """A measurement could not be made (too few samples, a failed run...)."""


class RuleDefinitionError(PsraBenchError):
    """A stored rule's payload has a field whose value the assessment engine cannot use."""

    def __init__(self, rule_id: str, field: str, value: object, allowed: str) -> None:
        self.rule_id = rule_id
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"rule {rule_id}: {field}={value!r} is not valid: {allowed}.")


class JobInputError(JobError):
    """A job's submit argument or payload field (named by ``field``, e.g. items[3].code) is not allowed."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{field}={shown} is not valid: {allowed}.")


class JobPayloadTooLarge(JobInputError):
    """A job's payload is larger than ``max_job_payload_bytes`` (the API answers 413)."""

    def __init__(self, size: int, limit: int) -> None:
        JobError.__init__(
            self,
            f"payload is {size:,} bytes of JSON, over the limit: use at most {limit:,} bytes "
            "(PSRA_JOB_MAX_PAYLOAD_BYTES).",
        )
        self.field, self.value, self.allowed = "payload", size, f"at most {limit:,} bytes"
        self.size = size
        self.limit = limit


class JobStoreError(JobError):
    """The job queue's Redis would lose jobs (it evicts keys) and running anyway was not allowed."""


class ResourceMissingError(PsraBenchError):
    """A file psra-bench ships (``sql/``, ``notebooks/``, ``loadtests/``) is missing from this installation."""

    def __init__(self, relative: str, package_dir: object) -> None:
        self.relative = relative
        super().__init__(f"{relative} is missing from this installation of psra-bench ({package_dir}); reinstall it")


class NotebookFailed(PsraBenchError):
    """A notebook of the report raised; the executed copy shows where."""

    def __init__(self, notebook: str, path: object, error: str) -> None:
        self.notebook = notebook
        self.path = path
        super().__init__(f"notebook {notebook} failed ({error}); see {path}")
