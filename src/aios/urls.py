"""Service URLs that may carry credentials (``http://user:pass@host/...`` or ``?token=...``): split into what an
HTTP client needs, and shown only with the credentials masked.

A credential must never reach a status page, an error or a log line, so everything that prints a service URL
prints ``redact_url(url)`` (or ``ServiceURL.shown``), and errors from the HTTP layer pass through ``scrub``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

MASK = "***"


@dataclass(frozen=True)
class ServiceURL:
    """``base`` is scheme, host, port and path only; the credentials are kept apart."""

    base: str
    username: str | None = None
    password: str | None = None
    params: list[tuple[str, str]] = field(default_factory=list)

    @property
    def secrets(self) -> list[str]:
        """Every value that must not be shown: the user info and the query's values."""
        return [s for s in (self.username, self.password, *(value for _, value in self.params)) if s]

    @property
    def shown(self) -> str:
        """The URL as it may be printed: user info and query values masked, their presence and names kept."""
        parts = urlsplit(self.base)
        netloc = f"{MASK}@{parts.netloc}" if self.username or self.password else parts.netloc
        query = "&".join(f"{name}={MASK}" for name, _ in self.params)
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def parse_service_url(url: str, api_path: str = "") -> ServiceURL:
    """Split ``url``; with ``api_path`` (e.g. ``/v1``) that path is added unless the URL's path already ends
    with it — to the path, never after the query string. Raises ValueError for a malformed URL."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if api_path and not path.endswith(api_path):
        path += api_path
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port is not None else "")
    return ServiceURL(
        base=urlunsplit((parts.scheme, netloc, path, "", "")),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        params=parse_qsl(parts.query, keep_blank_values=True),
    )


def redact_url(url: str) -> str:
    """``url`` as it may be printed; a string too malformed to split is not shown at all."""
    try:
        return parse_service_url(url).shown
    except ValueError:
        return MASK


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret (and its URL-encoded forms) masked. Values shorter than four characters are
    left alone: masking every "1" of a message would hide more than a one-character secret protects."""
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            text = text.replace(form, MASK)
    return text
