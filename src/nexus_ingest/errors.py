"""Every error Nexus raises on purpose; each docstring is its default message."""

from __future__ import annotations


class NexusError(Exception):
    """Nexus failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(NexusError):
    """The configuration is not valid."""


class DatabaseUnavailable(NexusError):
    """The database cannot be reached."""


class MigrationError(NexusError):
    """A database migration failed."""


class NotASupabaseProject(NexusError):
    """The folder is not a Supabase project (it has no supabase/config.toml)."""


class InputError(NexusError):
    """The input is not a valid conversation."""


class ExtractionError(NexusError):
    """The extractor failed."""


class RetryLater(ExtractionError):
    """The extractor failed for a passing reason; try the message again later."""

    def __init__(self, message: str | None = None, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class Permanent(ExtractionError):
    """The message can never be processed; it belongs in the dead-letter queue."""


class SaveFailed(NexusError):
    """Saving a batch of extractions failed; its messages stay queued and come back."""


class SaveRejected(SaveFailed):
    """The database refused what a batch holds (a value or a constraint), not how it was sent;
    trying the same batch again fails again."""
