"""`vectorstream models list | check | export` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _models_support import MODEL_ID, minilm, minilm_int8, model_folder, models_cache
from vectorstream.cli.main import app
from vectorstream.models import Embedder

__all__ = ["minilm", "minilm_int8", "model_folder", "models_cache"]

runner = CliRunner()


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_list_shows_the_packaged_model_as_available() -> None:
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["model"]: row for row in json.loads(result.stdout)}
    assert rows[MODEL_ID]["origin"] == "package"
    assert rows[MODEL_ID]["dim"] == 384
    assert rows["BAAI/bge-small-en-v1.5"]["origin"] == "absent"
    table = runner.invoke(app, ["models", "list"])
    assert table.exit_code == 0 and "all-MiniLM-L6-v2" in table.output


def test_check_reports_model_and_fidelity(minilm: Embedder) -> None:
    result = runner.invoke(app, ["models", "check", "minilm", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["model"], report["dim"], report["max_tokens"]) == (MODEL_ID, 384, 256)
    assert report["backend"] == "onnx"
    assert report["fingerprint"] == minilm.fingerprint
    assert report["fidelity"]["min_cosine"] >= 0.9999
    assert report["fidelity"]["passed"] is True


def test_check_without_reference_prints_plain_text() -> None:
    result = runner.invoke(app, ["models", "check", MODEL_ID, "--no-reference"])
    assert result.exit_code == 0, result.output
    assert "max_tokens: 256" in result.output
    assert "fidelity" not in result.output


def test_check_unknown_model_fails_with_the_places_looked_at() -> None:
    result = runner.invoke(app, ["models", "check", "nobody/nothing"])
    assert result.exit_code == 3
    assert "looked at" in result.output


def test_export_int8_reports_the_gate(minilm_int8: Embedder, models_cache: Path) -> None:
    result = runner.invoke(app, ["models", "export", MODEL_ID, "--int8", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert Path(data["fp32"]).is_file() and Path(data["int8"]).is_file()
    assert Path(data["int8"]).is_relative_to(models_cache)
    assert data["gate"]["passed"] is True
    assert data["gate"]["mean_cosine"] >= 0.99 and data["gate"]["min_cosine"] >= 0.97


def test_list_never_downloads_even_when_online(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def forbidden(*_args: object, **_kwargs: object) -> str:
        raise AssertionError("models list tried to download")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", forbidden)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert {row["origin"] for row in json.loads(result.stdout)} == {"package", "absent"}


def test_list_includes_models_found_in_the_hf_cache(tmp_path: Path, model_folder: Path) -> None:
    snapshot = tmp_path / "hf" / "hub" / "models--acme--mini" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").symlink_to(model_folder / "config.json")
    result = runner.invoke(app, ["models", "list", "--json"])
    rows = {row["model"]: row for row in json.loads(result.stdout)}
    assert rows["acme/mini"]["origin"] == "hf-cache"
    assert rows["acme/mini"]["path"] == str(snapshot)


def test_export_writes_a_folder_that_loads_without_re_export(
    minilm: Embedder, minilm_int8: Embedder, tmp_path: Path, models_cache: Path
) -> None:
    from vectorstream.models import load_model

    target = tmp_path / "minilm-onnx"
    result = runner.invoke(
        app, ["models", "export", MODEL_ID, "--int8", "--output", str(target), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["output"] == str(target)
    assert (target / "onnx" / "model.onnx").is_file()
    assert (target / "onnx" / "model.int8.onnx").is_file()
    assert (target / "1_Pooling" / "config.json").is_file()
    assert not (target / "model.safetensors").exists()  # no torch weights: ONNX only

    texts = ["a portable folder", "runs on ONNX Runtime"]
    fp32 = load_model(target, cache_dir=tmp_path / "empty-cache")
    assert fp32.backend == "onnx" and fp32.max_tokens == 256 and fp32.normalize
    assert Path(fp32.backend_impl.path) == target / "onnx" / "model.onnx"  # type: ignore[attr-defined]
    assert (fp32.embed(texts) * minilm.embed(texts)).sum(1).min() > 0.99999
    int8 = load_model(target, quantized=True, cache_dir=tmp_path / "empty-cache")
    assert Path(int8.backend_impl.path) == target / "onnx" / "model.int8.onnx"  # type: ignore[attr-defined]
    assert not (tmp_path / "empty-cache").exists()  # nothing exported or quantised again

    again = runner.invoke(app, ["models", "export", MODEL_ID, "--output", str(target)])
    assert again.exit_code == 2 and "not empty" in again.output
