"""The retrieval index on both stores (SQLite and a real PostgreSQL) for text PostgreSQL cannot hold as it is:
a file and a keyword with the NUL character."""

from __future__ import annotations

from pathlib import Path

import pytest

from aios.params import InvalidRequest
from aios.storage.index import Indexer
from aios.storage.requests import parse_request
from storage_support import make_fs, open_store, run, run_here

AGENT = "team/indexer"


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_file_with_nul_in_its_text_is_found_by_retrieve_and_blocks_no_other_file(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    postgres = request.getfixturevalue("postgres") if kind == "postgres" else None
    store = open_store(kind, tmp_path, postgres, vectors=False)
    try:
        fs = make_fs(store, tmp_path)
        fs.write(AGENT, "garden.txt", "The garden has tomatoes.")
        fs.write(AGENT, "nul.txt", "cucumbers\x00and\x00peppers")
        indexer = Indexer(fs, run_here, None)
        root = fs.root_of(AGENT)
        assert [r["file_path"] for r in run(indexer.search(root, "tomatoes", 5, None))] == ["garden.txt"]
        found = run(indexer.search(root, "peppers", 5, ["CUCUMBERS"]))
        assert [(r["file_path"], r["snippet"]) for r in found] == [("nul.txt", "cucumbers and peppers")]
        assert fs.read(AGENT, "nul.txt")["content"] == "cucumbers\x00and\x00peppers"  # only the index loses it
    finally:
        store.close()


def test_a_retrieve_keyword_with_nul_is_refused_naming_it() -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_request("retrieve", {"query_text": "peppers", "keywords": ["pep\x00pers"]})
    assert not refused.value.malformed
    assert str(refused.value) == ("params.keywords: contains the NUL character (\\u0000), which PostgreSQL text "
                                  "cannot hold; remove it")
