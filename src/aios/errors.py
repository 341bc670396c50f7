"""Errors the kernel reports to callers, each with the HTTP status a server should answer with."""

from __future__ import annotations


class KernelError(Exception):
    """Base of errors that reach a caller; ``status_code`` is what the HTTP layer answers."""

    status_code = 500


class BadRequest(KernelError):
    """The request is well-formed JSON but asks for something invalid (e.g. a bad response_format)."""

    status_code = 400


class NotFound(KernelError):
    """The request names something the kernel does not have (an unknown model)."""

    status_code = 404


class Unauthenticated(KernelError):
    """The request must say who it is, with a token (or, where tokens are not required, a name)."""

    status_code = 401


class Forbidden(KernelError):
    """The caller may not do this (e.g. a path outside its mount); the message names what and why."""

    status_code = 403


class Conflict(KernelError):
    """The request clashes with what exists (a file that already exists, a directory where a file is wanted)."""

    status_code = 409


class Gone(KernelError):
    """Something that existed is no longer available (an expired or revoked share link)."""

    status_code = 410


class TooLarge(KernelError):
    """The request carries more than a configured limit allows (file content over ``storage.max_file_mb``)."""

    status_code = 413


class NotText(KernelError):
    """The content is not UTF-8 text, so it cannot be returned as a string."""

    status_code = 415


class InsufficientStorage(KernelError):
    """The disk (or the user's quota) is full, so the kernel cannot keep what was asked."""

    status_code = 507


class CapacityExceeded(KernelError):
    """A generation needs more KV-cache memory than the model's budget allows, even running alone."""

    status_code = 413


class NotAvailable(KernelError):
    """A capability that is not configured or not built yet; the message says what is missing."""

    status_code = 501


class Unavailable(KernelError):
    """A part of the kernel that should serve the request is down right now (a model whose engine failed)."""

    status_code = 503


class Cancelled(KernelError):
    """The syscall was cancelled before it finished (its caller went away, or the kernel is stopping)."""

    status_code = 499


class ConfigError(Exception):
    """A bad config file or environment value; the message names the field and the problem."""


class ModelNotFound(Exception):
    """No model could be found for a name; the message lists every place that was tried."""
