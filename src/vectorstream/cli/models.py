"""``vectorstream models``: list known and local models, check one, export one to ONNX."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ._common import EXIT_PARTIAL, library_errors, out_console

# A model is "faithful" when every check text's vector is this close to sentence-transformers'.
FIDELITY_MIN_COSINE = 0.9999
CHECK_TEXTS = 48


def register(app: typer.Typer) -> None:
    """Add this module's commands to the application."""
    models_app = typer.Typer(
        name="models",
        help="List, check and export embedding models.",
        no_args_is_help=True,
    )
    models_app.command("list")(list_command)
    models_app.command("check")(check_command)
    models_app.command("export")(export_command)
    app.add_typer(models_app, name="models")


def _emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Known models (the catalogue) and models already on this machine; never downloads."""
    from ..errors import ModelError
    from ..models import CATALOG, cached_hub_models, detect_kind, resolve_model

    rows: list[dict[str, Any]] = []
    for entry in CATALOG.entries:
        try:
            found = resolve_model(entry.model_id, allow_download=False)
            where, origin = str(found.path), found.origin
        except ModelError:
            where, origin = "", "absent"
        rows.append(
            {
                "model": entry.model_id,
                "kind": "dense",
                "dim": entry.dim,
                "max_tokens": entry.max_tokens,
                "size_mb": entry.size_mb,
                "license": entry.license,
                "origin": origin,
                "path": where,
                "aliases": list(entry.aliases),
                "description": entry.description,
            }
        )
    known = {entry.model_id for entry in CATALOG.entries}
    for cached in cached_hub_models():
        if cached.model_id not in known:
            rows.append(
                {
                    "model": cached.model_id,
                    "kind": detect_kind(cached.path),
                    "dim": None,
                    "max_tokens": None,
                    "size_mb": None,
                    "license": None,
                    "origin": cached.origin,
                    "path": str(cached.path),
                    "aliases": [],
                    "description": "in the HuggingFace cache",
                }
            )
    if as_json:
        _emit_json(rows)
        return
    table = Table(title="embedding models (available: where this machine has it)")
    # Model ids are what users copy: never wrap them.
    table.add_column("model", no_wrap=True)
    for name in ("kind", "dim", "tokens", "MB", "available"):
        table.add_column(name, no_wrap=True)
    for row in rows:
        table.add_row(
            row["model"],
            row["kind"],
            str(row["dim"] or "?"),
            str(row["max_tokens"] or "?"),
            f"{row['size_mb']:.0f}" if row["size_mb"] else "?",
            row["origin"],
        )
    out_console.print(table)


def _reference_fidelity(path: Path, texts: list[str], ours: Any) -> dict[str, Any]:
    """Cosines of our vectors to sentence-transformers' on the same texts (if it is installed)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return {"reference": "sentence-transformers not installed; fidelity not checked"}
    from ..models import cosine_rows

    try:
        reference = SentenceTransformer(str(path), device="cpu").encode(
            texts, convert_to_numpy=True, normalize_embeddings=True
        )
    except Exception as exc:  # any failure of the reference only means "not checked"
        return {"reference": f"sentence-transformers could not run the model: {exc}"}
    cos = cosine_rows(ours, reference)
    return {
        "reference": "sentence-transformers",
        "texts": len(texts),
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
    }


def check_command(
    spec: Annotated[str | None, typer.Argument(help="Model: hub id, alias or folder.")] = None,
    backend: Annotated[str | None, typer.Option(help="onnx | torch (default: automatic)")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Check the int8-quantised graph.")] = False,
    kind: Annotated[
        str | None,
        typer.Option(help="dense | sparse | multivector | image | rerank (default: the folder's)"),
    ] = None,
    reference: Annotated[
        bool, typer.Option(help="Compare with sentence-transformers when it is installed.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Load SPEC and report dim, max tokens, backend; check fidelity to sentence-transformers."""
    from ..models import MIN_COSINE, MIN_MEAN_COSINE, check_texts, load_model

    with library_errors():
        model = load_model(spec, backend=backend, quantized=int8, kind=kind)
        texts = check_texts(CHECK_TEXTS)
        if getattr(model, "kind", "dense") != "dense":
            _report_kind(model, texts, as_json)
            return
        vectors = model.embed(texts)
    report: dict[str, Any] = {
        "model": model.model_id,
        "kind": "dense",
        "path": str(model.path),
        "backend": model.backend,
        "quantized": model.quantized,
        "dim": model.dim,
        "max_tokens": model.max_tokens,
        "fingerprint": model.fingerprint,
    }
    ok = True
    if reference:
        fidelity = _reference_fidelity(model.path, texts, vectors)
        report["fidelity"] = fidelity
        if "min_cosine" in fidelity:
            if int8:
                ok = (
                    fidelity["mean_cosine"] >= MIN_MEAN_COSINE
                    and fidelity["min_cosine"] >= MIN_COSINE
                )
            else:
                ok = fidelity["min_cosine"] >= FIDELITY_MIN_COSINE
            fidelity["passed"] = ok
    if as_json:
        _emit_json(report)
    else:
        for key, value in report.items():
            if key != "fidelity":
                out_console.print(f"[bold]{key}[/]: {value}", highlight=False)
        fidelity = report.get("fidelity", {})
        if "min_cosine" in fidelity:
            verdict = "[green]ok[/]" if ok else "[red]FAILED[/]"
            out_console.print(
                f"[bold]fidelity[/]: cosine to sentence-transformers over {fidelity['texts']} "
                f"texts: mean {fidelity['mean_cosine']:.6f}, min {fidelity['min_cosine']:.6f} "
                f"{verdict}",
                highlight=False,
            )
        elif fidelity:
            out_console.print(f"[bold]fidelity[/]: {fidelity['reference']}", highlight=False)
    if not ok:
        raise typer.Exit(EXIT_PARTIAL)


def _report_kind(model: Any, texts: list[str], as_json: bool) -> None:
    """What a non-dense model makes of the check texts. Its agreement with its reference
    implementation (SparseEncoder, the multi-vector encoder, CrossEncoder, CLIPModel) is held
    by the test suite, which builds those references."""
    report: dict[str, Any] = {
        "model": model.model_id,
        "kind": model.kind,
        "backend": model.backend,
        "quantized": model.quantized,
        "dim": model.dim,
        "max_tokens": model.max_tokens,
        "fingerprint": model.fingerprint,
    }
    if model.kind == "rerank":
        scores = [r.score for r in model.rerank(texts[0], texts[1:])]
        report["rerank"] = {"pairs": len(scores), "min": min(scores), "max": max(scores)}
    elif model.kind == "image":
        vectors = model.embed(texts)
        report["text_tower"] = {"texts": len(texts), "shape": list(vectors.shape)}
    else:
        embeddings = model.embed(texts)
        if model.kind == "sparse":
            terms = [len(e.sparse.indices) for e in embeddings]
            report["sparse"] = {"texts": len(texts), "mean_terms": sum(terms) / len(terms)}
        else:
            rows = [len(e.multivector) for e in embeddings]
            report["multivector"] = {"texts": len(texts), "mean_vectors": sum(rows) / len(rows)}
    if as_json:
        _emit_json(report)
        return
    for key, value in report.items():
        out_console.print(f"[bold]{key}[/]: {value}", highlight=False)


def export_command(
    spec: Annotated[str | None, typer.Argument(help="Model: hub id, alias or folder.")] = None,
    int8: Annotated[
        bool, typer.Option("--int8", help="Also quantise to int8 (per-channel, gated).")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Keep an int8 graph that fails the accuracy gate.")
    ] = False,
    cache_dir: Annotated[
        str | None, typer.Option(help="Cache folder (default: VECTORSTREAM_CACHE_DIR).")
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            help="Also write a self-contained ONNX model folder here (runs without torch)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Export SPEC to ONNX in the cache; with --int8, quantise behind the accuracy gate."""
    from ..models import export_model

    with library_errors():
        result = export_model(spec, int8=int8, force=force, cache_dir=cache_dir, output=output)
    data: dict[str, Any] = {
        "model": result.model_id,
        "fp32": str(result.fp32_path),
        "int8": str(result.int8_path) if result.int8_path else None,
        "output": str(result.output) if result.output else None,
    }
    if result.gate is not None:
        data["gate"] = {
            "mean_cosine": result.gate.mean_cosine,
            "min_cosine": result.gate.min_cosine,
            "texts": result.gate.texts,
            "passed": result.gate.passed,
            "forced": result.gate.forced,
        }
    if as_json:
        _emit_json(data)
        return
    out_console.print(f"[bold]fp32[/]: {data['fp32']}", highlight=False)
    if result.int8_path is not None and result.gate is not None:
        out_console.print(f"[bold]int8[/]: {data['int8']}", highlight=False)
        out_console.print(f"[bold]gate[/]: {result.gate.describe()}", highlight=False)
    if result.output is not None:
        out_console.print(f"[bold]folder[/]: {result.output}", highlight=False)
