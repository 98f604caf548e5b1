"""The CLI end to end with the real all-MiniLM-L6-v2: ingest a corpus, search it, re-run."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from _pipeline_support import write_corpus
from vectorstream.cli.main import app


def test_ingest_then_search_with_the_real_model(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    (tmp_path / "corpus" / "broken.pdf").write_bytes(b"%PDF-1.7\n garbage")
    store = f"lancedb://{tmp_path / 'store'}"
    runner = CliRunner()

    result = runner.invoke(app, ["ingest", str(tmp_path / "corpus"), "--store", store, "--json"])
    assert result.exit_code == 1, result.output  # one broken file: partial success
    report = json.loads(result.stdout)
    assert report["files_ok"] == len(corpus) and report["files_failed"] == 1
    assert report["errors"][0]["source"].endswith("broken.pdf")
    assert report["vectors"] == report["chunks"] > 0

    result = runner.invoke(
        app, ["search", "baking bread with olive oil", "--store", store, "-k", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["hits"]
    assert hits[0]["source"] == str(corpus["cooking"].resolve())
    assert hits[0]["score"] >= hits[-1]["score"]

    filtered = runner.invoke(
        app,
        [
            "search",
            "baking bread",
            "--store",
            store,
            "--json",
            "--where",
            f"source={corpus['sailing'].resolve()}",
        ],
    )
    assert filtered.exit_code == 0, filtered.output
    assert {h["source"] for h in json.loads(filtered.stdout)["hits"]} == {
        str(corpus["sailing"].resolve())
    }

    again = runner.invoke(app, ["ingest", str(tmp_path / "corpus"), "--store", store, "--json"])
    rerun = json.loads(again.stdout)
    assert rerun["files_skipped"] == len(corpus) and rerun["chunks"] == 0


def test_bad_store_uri_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["search", "x", "--store", "nosuch://here"])
    assert result.exit_code == 2
    assert "unknown store URI scheme" in result.output
