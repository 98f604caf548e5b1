"""The CLI end to end with the real all-MiniLM-L6-v2: ingest a corpus, search it, re-run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _pipeline_support import minilm_folder, write_corpus
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--splitter", "foo"], "unknown splitter 'foo'"),
        (["--overlap", "300", "--chunk-tokens", "256"], "overlap (300) must be smaller"),
        (["--buffer", "1"], "buffer must be at least 16"),
        (["--collection", "no/slashes"], "collection must be"),
        (["--int8", "--backend", "torch"], "needs the onnx backend"),
        (["--include", "[z-a]"], "invalid glob '[z-a]'"),
    ],
)
def test_bad_options_exit_2_before_any_model_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    """A fresh cache: had the model loaded, its first ONNX export would create the folder."""
    cache = tmp_path / "fresh-cache"
    monkeypatch.setenv("VECTORSTREAM_CACHE_DIR", str(cache))
    (tmp_path / "a.md").write_text("# A\n\nSome text.\n", encoding="utf-8")
    model = str(minilm_folder())  # a local model without an ONNX graph: loading would export
    store = f"lancedb://{tmp_path / 's'}"
    started = time.perf_counter()
    result = CliRunner().invoke(
        app, ["ingest", str(tmp_path / "a.md"), "--store", store, "--model", model, *args]
    )
    elapsed = time.perf_counter() - started
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())  # rich wraps long lines
    assert not cache.exists() and not (tmp_path / "s").exists()
    assert elapsed < 10, elapsed  # an export takes far longer on any machine


def test_overlap_over_the_models_own_limit_exits_2(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\nSome text.\n", encoding="utf-8")
    store = f"lancedb://{tmp_path / 's'}"
    limits = ["--chunk-tokens", "1000", "--overlap", "300"]
    result = CliRunner().invoke(
        app,
        [
            "ingest",
            str(tmp_path / "a.md"),
            "--store",
            store,
            "--model",
            str(minilm_folder()),
            *limits,
        ],
    )
    assert result.exit_code == 2, result.output
    assert "lower --overlap" in " ".join(result.output.split())
