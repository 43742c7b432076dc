"""Every error the toolkit raises on purpose, and the exit code the CLI gives it.

OfflineError                      exit 1   base class; message says what, where, and the fix
├── ConfigError                   exit 3   a spec/config file or option is invalid
├── NotFoundError                 exit 4   an input (file, image, model, package) does not exist
├── ResolutionError               exit 5   requirements cannot be resolved for the target
├── NetworkError                  exit 6   a remote (index, registry, hub) could not be reached
├── IntegrityError                exit 7   a hash, signature or archive check failed
├── ResourceError                 exit 8   disk full, permission denied
├── ToolError                     exit 9   an external tool (uv, skopeo) is missing or failed
├── DataError                     exit 10  a dataset cannot be read or fails a validation check
├── TrainingError                 exit 11  a training guard stopped the run (NaN, loss spike, OOM)
├── GateError                     exit 12  an exported artifact failed the deployment gate
├── DowngradeError                exit 13  a bundle older than the installed one (replay, rollback)
└── DoctorError                   exit 2   deepseek-doctor itself could not run (bad options)

Usage errors (bad command-line syntax) exit 2; an unexpected crash exits 70.
"""

from __future__ import annotations


class OfflineError(Exception):
    """Base class: ``message`` says what went wrong and where, ``fix`` how to fix it."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}\n  fix: {self.fix}"


class ConfigError(OfflineError):
    exit_code = 3


class NotFoundError(OfflineError):
    exit_code = 4


class ResolutionError(OfflineError):
    exit_code = 5


class NetworkError(OfflineError):
    exit_code = 6


class IntegrityError(OfflineError):
    exit_code = 7


class ResourceError(OfflineError):
    exit_code = 8


class ToolError(OfflineError):
    exit_code = 9


class DataError(OfflineError):
    exit_code = 10


class TrainingError(OfflineError):
    exit_code = 11


class GateError(OfflineError):
    exit_code = 12


class DowngradeError(OfflineError):
    exit_code = 13


class DoctorError(OfflineError):
    exit_code = 2


USAGE_EXIT = 2
INTERNAL_EXIT = 70

__all__ = [
    "INTERNAL_EXIT",
    "USAGE_EXIT",
    "ConfigError",
    "DataError",
    "DoctorError",
    "DowngradeError",
    "GateError",
    "IntegrityError",
    "NetworkError",
    "NotFoundError",
    "OfflineError",
    "ResolutionError",
    "ResourceError",
    "ToolError",
    "TrainingError",
]
