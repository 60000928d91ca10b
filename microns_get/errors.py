"""The one error tree of microns-get, and the exit code of each branch.

Every failure the tool reports on purpose is a `MicronsGetError`; third-party exceptions are
wrapped once, where they enter (the source layer, the manifest loader). Only the CLI turns these
into messages and exit codes, through `exit_code_for`.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes (README, "Exit codes")."""

    OK = 0
    SOME_FAILED = 1  # the run finished, but some items could not be fetched
    BAD_INPUT = 2  # unknown dataset/version, bad flag value, malformed file: nothing written
    LOCK_HELD = 3  # another run holds the destination's lock
    VERIFY_FAILED = 4  # data arrived but did not match its checksum / schema
    REMOTE_FAILED = 5  # the remote could not be reached or answered with an error
    INTERRUPTED = 130  # Ctrl-C / SIGINT


class MicronsGetError(Exception):
    """Base of every error the tool reports as one clear line."""

    exit_code: ExitCode = ExitCode.SOME_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadInput(MicronsGetError):
    """The user asked for something that does not exist or cannot be done."""

    exit_code = ExitCode.BAD_INPUT


class UnknownDataset(BadInput):
    """No dataset with that id (the message names close matches)."""


class UnknownVersion(BadInput):
    """The dataset has no such version or volume (the message lists the valid ones)."""


class ConfigError(BadInput):
    """A config file or setting is malformed."""


class ManifestError(BadInput):
    """A manifest file is malformed: the message names the file, the line and what was expected."""


class UnsafeKey(BadInput):
    """A remote key would escape the destination directory (`../x`, absolute paths)."""


class InfoError(MicronsGetError):
    """A precomputed `info` file violates the format (names the field and the rule)."""

    exit_code = ExitCode.VERIFY_FAILED


class VerificationFailed(MicronsGetError):
    """Bytes arrived but their size or checksum does not match what the remote declared."""

    exit_code = ExitCode.VERIFY_FAILED


class LockHeld(MicronsGetError):
    exit_code = ExitCode.LOCK_HELD


class RemoteError(MicronsGetError):
    """The remote answered with an error we do not retry, or kept failing after retries."""

    exit_code = ExitCode.REMOTE_FAILED

    def __init__(self, message: str, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


def exit_code_for(error: BaseException) -> ExitCode:
    """Map any exception to the documented exit code."""
    if isinstance(error, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(error, MicronsGetError):
        return error.exit_code
    return ExitCode.SOME_FAILED
