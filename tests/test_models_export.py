"""ONNX export and the int8 accuracy gate: refusal, --force, concurrent exporters."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from _models_support import MODEL_ID, minilm, minilm_int8, model_folder, models_cache
from vectorstream import ModelError
from vectorstream.models import Embedder, GateReport, load_model, read_folder
from vectorstream.models import _gate as gate_module
from vectorstream.models._export import GATE_NAME, INT8_NAME

__all__ = ["minilm", "minilm_int8", "model_folder", "models_cache"]


def failing_measure(*_args: object, **_kwargs: object) -> GateReport:
    return GateReport(mean_cosine=0.95, min_cosine=0.80, texts=96)


def test_gate_refuses_a_poor_int8_graph_and_force_keeps_it(
    tmp_path: Path, minilm: Embedder, model_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fp32 = Path(minilm.backend_impl.path)  # type: ignore[attr-defined]
    folder = read_folder(model_folder)
    directory = tmp_path / "graphs"
    directory.mkdir()
    # The quantisation is real; only the measured figures are replaced by poor ones.
    monkeypatch.setattr(gate_module, "measure", failing_measure)
    with pytest.raises(ModelError, match=r"refused.*mean cosine 0\.9500.*min 0\.8000"):
        gate_module.ensure_int8(MODEL_ID, folder, fp32, directory)
    assert not (directory / INT8_NAME).exists()
    assert not list(directory.glob(".partial-*"))  # nothing half-written left behind

    path, report = gate_module.ensure_int8(MODEL_ID, folder, fp32, directory, force=True)
    assert path == directory / INT8_NAME and path.is_file()
    assert report.forced and not report.passed
    # The report is stored beside the graph and read back on the next call.
    again_path, again = gate_module.ensure_int8(MODEL_ID, folder, fp32, directory)
    assert again_path == path and again == report


def test_a_cached_int8_graph_an_older_recipe_made_is_made_again(
    tmp_path: Path, minilm: Embedder, model_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cache kept from before every weight MatMul was quantised served the slower graph forever.
    fp32 = Path(minilm.backend_impl.path)  # type: ignore[attr-defined]
    folder = read_folder(model_folder)
    directory = tmp_path / "graphs"
    directory.mkdir()
    (directory / INT8_NAME).write_bytes(b"a graph the first recipe made")
    old = {"mean_cosine": 0.9958, "min_cosine": 0.9831, "texts": 96, "forced": False}
    (directory / GATE_NAME).write_text(json.dumps(old))  # as recipe 1 wrote it: no "recipe"
    calls: list[int] = []

    def figures(*_args: object, **_kwargs: object) -> GateReport:
        calls.append(1)
        return GateReport(mean_cosine=0.995, min_cosine=0.98, texts=96)

    monkeypatch.setattr(gate_module, "measure", figures)
    path, report = gate_module.ensure_int8(MODEL_ID, folder, fp32, directory)
    assert calls == [1] and report.recipe == gate_module.INT8_RECIPE
    assert path.read_bytes() != b"a graph the first recipe made"
    assert gate_module.read_report(directory) == report
    # Made by the current recipe, it is kept.
    assert gate_module.ensure_int8(MODEL_ID, folder, fp32, directory) == (path, report)
    assert calls == [1]


def test_real_gate_figures_pass(minilm_int8: Embedder) -> None:
    # The session's int8 model went through the real gate; its figures sit beside the graph.
    report = gate_module.read_report(Path(minilm_int8.backend_impl.path).parent)  # type: ignore[attr-defined]
    assert report is not None
    assert report.passed and not report.forced
    assert report.mean_cosine >= 0.99 and report.min_cosine >= 0.97
    assert "passed" in report.describe()


@pytest.mark.slow
def test_concurrent_loads_export_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "fresh-cache"
    models: list[Embedder] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            models.append(load_model(MODEL_ID, cache_dir=cache))
        except BaseException as exc:
            errors.append(exc)

    with caplog.at_level(logging.WARNING, logger="vectorstream.models.export"):
        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    exports = [r for r in caplog.records if r.getMessage().startswith("exporting")]
    assert len(exports) == 1
    paths = {m.backend_impl.path for m in models}  # type: ignore[attr-defined]
    assert len(paths) == 1 and all(m.backend == "onnx" for m in models)
    assert not list(cache.rglob(".partial-*"))


def test_int8_keeps_the_feed_forward_down_projections_in_float(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from vectorstream.models._export import float_matmuls

    names = [
        "/inner/encoder/layer.0/attention/output/dense/MatMul",
        "/inner/encoder/layer.0/intermediate/dense/MatMul",
        "/inner/encoder/layer.0/output/dense/MatMul",
        "/model/layers.3/mlp/down_proj/MatMul",
        "/model/layers.3/mlp/up_proj/MatMul",
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    nodes = [helper.make_node("MatMul", ["x", "x"], [f"y{i}"], name=n) for i, n in enumerate(names)]
    outputs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(5)]
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], outputs)), str(path))
    assert float_matmuls(path) == [names[2], names[3]]


def _float_ffn_outputs(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and "/output/dense/" in n.name and "attention" not in n.name
    ]


@pytest.mark.parametrize("first_passes", [True, False])
def test_the_gate_quantises_every_weight_first_and_keeps_ffn_outputs_float_if_it_must(
    tmp_path: Path,
    minilm: Embedder,
    model_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    first_passes: bool,
) -> None:
    fp32 = Path(minilm.backend_impl.path)  # type: ignore[attr-defined]
    calls: list[int] = []

    def figures(*_args: object, **_kwargs: object) -> GateReport:
        calls.append(1)
        if len(calls) == 1 and not first_passes:
            return GateReport(mean_cosine=0.985, min_cosine=0.96, texts=96)
        return GateReport(mean_cosine=0.995, min_cosine=0.98, texts=96)

    monkeypatch.setattr(gate_module, "measure", figures)
    directory = tmp_path / "graphs"
    directory.mkdir()
    path, report = gate_module.ensure_int8(MODEL_ID, read_folder(model_folder), fp32, directory)
    assert report.passed and report.ffn_output_float is not first_passes
    assert len(calls) == (1 if first_passes else 2)
    kept = _float_ffn_outputs(path)
    assert (kept == []) if first_passes else (len(kept) == 6)  # MiniLM-L6: one per layer
