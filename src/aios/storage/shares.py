"""Share links: a URL served by this kernel (``GET /share/{token}``) that gives one version of a file, read-only,
until it expires, its owner revokes it, or the file is deleted. Nothing is uploaded anywhere.

The token is 256 random bits (unguessable); the store keeps only its SHA-256, so the database alone opens no
link. A link pins the version that was current when it was made: later writes do not change what it shows.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from aios.errors import BadRequest, Gone, KernelError, NotFound
from aios.storage.files import FileSystem, Result, iso_time
from aios.storage.paths import inside, resolve
from aios.storage.store import FileRecord, Share

TOKEN = re.compile(r"[A-Za-z0-9_-]{32,64}")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SharedFile:
    name: str
    data: bytes
    version: int


class ShareLinks:
    def __init__(self, fs: FileSystem, default_expiry_s: int, max_expiry_s: int, public_url: str | None) -> None:
        self.fs, self.default_expiry_s, self.max_expiry_s = fs, default_expiry_s, max_expiry_s
        self.public_url = public_url
        self.served_url: str | None = None  # where this kernel listens, once its server is up

    def share(self, agent: str, file_path: str, expires_in: int | None = None, base_url: str | None = None) -> Result:
        seconds = self.default_expiry_s if expires_in is None else expires_in
        if seconds > self.max_expiry_s:
            raise BadRequest(f"expires_in {seconds} s is longer than the limit of {self.max_expiry_s} s "
                             "(storage.share_max_expiry_days)")
        root, place = self.fs.file_place(agent, file_path)
        record = self.fs.touch(root, place)
        if record.hash is None:
            raise NotFound(f"no file {place.relative} in the mount {root.path}")
        token, now = secrets.token_urlsafe(32), self.fs.clock()
        self.fs.store.add_share(Share(token_hash(token), record.id, record.head, agent, now, now + seconds))
        url = f"{self._base(base_url)}/share/{token}"
        return {"operation": "share", "path": str(place.absolute), "file_path": place.relative,
                "version": record.head, "url": url, "token": token, "expires_in": seconds,
                "expires_at": iso_time(now + seconds),
                "message": f"{place.relative} (version {record.head}) is shared read-only at {url} until "
                           f"{iso_time(now + seconds)}"}

    def unshare(self, agent: str, link: str | None = None, file_path: str | None = None) -> Result:
        """Revoke one link (its URL or token) or every link to a file; only the agent that shared it may."""
        now = self.fs.clock()
        if file_path is not None:
            _, place = self.fs.file_place(agent, file_path)
            revoked = sum(self.fs.store.revoke_shares(now, file_id=record.id)
                          for record in self._records(agent, place.absolute))
            what = f"link(s) to {place.relative}"
        else:
            token = (link or "").rstrip("/").rsplit("/", 1)[-1]
            share = self.fs.store.share(token_hash(token))
            if share is None or share.agent != agent:
                raise NotFound("no share link of yours has that token")
            revoked, what = self.fs.store.revoke_shares(now, token_hash=token_hash(token)), "link with that token"
        return {"operation": "unshare", "revoked": revoked,
                "message": f"revoked {revoked} live {what}" if revoked else f"no live {what} to revoke"}

    def open(self, token: str) -> SharedFile:
        """What ``GET /share/{token}`` serves; NotFound for an unknown token, Gone once expired or revoked."""
        share = self.fs.store.share(token_hash(token)) if TOKEN.fullmatch(token) else None
        if share is None:
            raise NotFound("no such share link")
        if share.revoked is not None:
            raise Gone(f"this share link was revoked at {iso_time(share.revoked)}")
        if self.fs.clock() >= share.expires:
            raise Gone(f"this share link expired at {iso_time(share.expires)}")
        record = self._settled(self.fs.store.file_by_id(share.file_id))
        deletion = self.fs.store.deleted_after(record.id, share.version)
        if deletion is not None:  # for good: bringing the file back does not bring its old links back
            raise Gone(f"the shared file was deleted at {iso_time(deletion.time)}")
        version = self.fs.store.version(record.id, share.version)
        if version is None or version.hash is None:
            raise Gone("the shared version is no longer available")
        try:
            data = self.fs.content(record.path, version)
        except (Gone, OSError):  # the details (where the kernel keeps versions) are not for whoever holds the link
            raise Gone("the shared version is no longer available") from None
        return SharedFile(record.path.rsplit("/", 1)[-1], data, version.number)

    def _records(self, owner: str, path: Path) -> list[FileRecord]:
        """The records of the file at ``path`` in each of ``owner``'s mounts that holds it: a folder of a mount
        mounted too keeps histories of its own, and a link may have been made through either."""
        records = []
        for root in self.fs.store.roots():
            if root.owner == owner and inside(path, Path(root.path)):
                record = self.fs.store.file(root.id, path.relative_to(root.path).as_posix())
                records += [record] if record is not None else []
        return records

    def _settled(self, record: FileRecord) -> FileRecord:
        """``record`` once what happened to its file on disk is recorded: a deletion made through another mount
        (or outside the kernel) ends its links as one made through this mount does."""
        root = next(root for root in self.fs.store.roots() if root.id == record.root_id)
        try:
            return self.fs.touch(root, resolve(Path(root.path), record.path))
        except (KernelError, OSError):  # unreadable now, or a parent turned into a link out: the history stands
            return record

    def _base(self, base_url: str | None) -> str:
        base = self.public_url or base_url or self.served_url or "http://localhost:8000"
        return base.rstrip("/")
