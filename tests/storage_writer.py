"""A writer for the crash test, run as its own process and killed with SIGKILL at random moments: it writes
versions of one file as fast as it can, printing the number of each after it is written. It imports only the
storage modules (no torch, no model), so it starts in a fraction of a second.

Usage: python storage_writer.py DATA_DIR [POSTGRES_DSN]"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from storage_support import make_fs  # noqa: E402

AGENT, FILE = "crash/writer", "journal.txt"


def content(number: int) -> str:
    """Version ``number``'s text: sizes vary (up to ~256 KB) so a kill lands in every step of a write."""
    line = f"version {number}: " + "abcdefghij" * (number * 7919 % 97) + "\n"
    return line * (1 + number * 104729 % 700)


def main() -> None:
    data = Path(sys.argv[1])
    if len(sys.argv) > 2:
        from aios.storage.postgres_store import PostgresStore

        store = PostgresStore(sys.argv[2], vectors=False)
    else:
        from aios.storage.sqlite_store import SQLiteStore

        store = SQLiteStore(data / "lsfs" / "lsfs.db", vectors=False)
    fs = make_fs(store, data)
    number = next_version(fs)  # reading the history first settles what a kill left pending
    while True:
        written = fs.write(AGENT, FILE, content(number))["version"]
        if written != number:
            sys.exit(f"wrote version {written}, expected {number}")
        print(number, flush=True)
        number += 1


def next_version(fs) -> int:  # noqa: ANN001
    if fs.store.mount_of(AGENT) is None:
        return 1
    return fs.history(AGENT, FILE, limit=1)["versions"][0]["version"] + 1


if __name__ == "__main__":
    main()
