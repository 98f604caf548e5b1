"""A corpus of broken files: each is reported with path, stage and reason; every good file lands."""

from __future__ import annotations

from pathlib import Path

from _parsers_support import make_broken_corpus, make_odd_but_valid
from _pipeline_support import TOPICS, FakeEmbedder, write_corpus
from vectorstream.pipeline import ingest
from vectorstream.stores import open_store


def test_broken_files_are_reported_and_good_files_ingested(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    good = write_corpus(root)
    broken = make_broken_corpus(root / "broken")
    odd = make_odd_but_valid(root / "odd")
    uri = f"lancedb://{tmp_path / 'store'}"
    report = ingest([root], store=uri, model=FakeEmbedder(), workers=1)

    failed = {e.source: e for e in report.errors}
    for key, path in broken.items():
        failure = failed.get(str(path.resolve()))
        assert failure is not None, f"{key} ({path.name}) was not reported"
        assert failure.stage in ("read", "parse") and failure.message
    # Hostile but valid files parse; the empty one has no text and is reported as such.
    empty = failed.pop(str(odd["empty"].resolve()))
    assert empty.error_type == "EmptyDocument"
    assert set(failed) == {str(p.resolve()) for p in broken.values()}
    assert report.files_ok == len(TOPICS) + len(odd) - 1
    assert report.exit_code == 1
    # The replaced bytes of the invalid UTF-8 file are reported as a warning, not an error.
    assert any("invalid.txt" in w for w in report.warnings)
    store = open_store(uri, "documents")
    try:
        for path in list(good.values()) + [p for k, p in odd.items() if k != "empty"]:
            assert store.ids(source=str(path.resolve())), f"{path.name} has no records"
        for path in broken.values():
            assert not store.ids(source=str(path.resolve()))
    finally:
        store.close()
