"""Does the pipeline hide everything but the model when it has a core to spare?

On a machine with two cores, the model gets one core and one ONNX Runtime thread in both runs:

- ``limit``: the model alone, its process pinned to the inference core: the pipeline's own chunk
  texts, tokenised in advance, straight through ``embedder.embed_tokenized`` (token-budget
  batches, ONNX Runtime fp32, one thread). No parsing, no writing.
- ``pipeline``: ``vectorstream.ingest`` of the corpus into LanceDB with the same one-thread
  model, its inference pinned to the same core (``inference_cpus``) and parsing, tokenising and
  writing on the other (``io_cpus``, one parsing worker).

Goal: pipeline tokens/s >= 0.95 x the limit's on the x10 sample corpus. The two alternate in
rounds (pipeline, limit, pipeline, limit, ...; the first pipeline run's stored chunk texts feed
every limit run) so drifting load on a shared machine hits both alike; medians and each round's
ratio are reported. tokens are real tokens (attention mask: special tokens included, truncated at
the model's 256, no padding); tokens/s divide by the timed part only (model loading is timed apart
as ``load_s``). Each run is its own subprocess; peak RSS is its whole process tree.

    .venv/bin/python benchmarks/free_core.py            # x10 corpus (400 files), 3 rounds
    .venv/bin/python benchmarks/free_core.py --quick    # 5 files, 1 round: proves the harness works
    .venv/bin/python benchmarks/free_core.py --limit-window 256   # limit batches like the pipeline

Prints tables and writes benchmarks/results/free_core.json. The same file is the child:
``free_core.py child {prepare,limit,pipeline} ...`` runs one measurement and writes a result JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    format_table,
    machine_info,
    median,
    mib,
    minilm_dir,
    package_versions,
    run_measured,
    write_json,
)

COLLECTION = "bench"
GOAL = 0.95  # pipeline tokens/s over the single-core limit's
WARMUP_ITEMS = 8
VERSIONED = ("vectorstream", "onnxruntime", "tokenizers", "lancedb", "numpy")


def _log(message: str) -> None:
    print(f"[free_core {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ======================================================================== child side
# Each function runs in its own subprocess and imports vectorstream itself.


def _load(model_dir: Path) -> tuple[Any, float]:
    import vectorstream

    start = time.perf_counter()
    embedder = vectorstream.load_model(str(model_dir), backend="onnx", threads=1)
    load_s = time.perf_counter() - start
    if embedder.threads != 1:
        raise RuntimeError(f"the model runs {embedder.threads} threads, not 1")
    return embedder, load_s


def _child_prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Load once before any measured run, so a first-time ONNX export is nobody's load or RSS."""
    _, load_s = _load(args.model_dir)
    return {"load_s": load_s}


def _child_limit(args: argparse.Namespace) -> dict[str, Any]:
    # Pinned before anything starts a thread: every thread of this process inherits the core.
    os.sched_setaffinity(0, {args.inference_cpu})
    texts: list[str] = json.loads(Path(args.texts).read_text("utf-8"))
    embedder, load_s = _load(args.model_dir)
    encoded = embedder.tokenize(texts)  # not timed: the limit is the model alone
    step = args.window or len(encoded)
    windows = [encoded[i : i + step] for i in range(0, len(encoded), step)]
    # ONNX Runtime sizes its buffers on the first run; the limit is the model's steady state.
    embedder.embed_tokenized(encoded[:WARMUP_ITEMS])
    start = time.perf_counter()
    for window in windows:
        embedder.embed_tokenized(window)
    seconds = time.perf_counter() - start
    return {
        "chunks": len(texts),
        "tokens": sum(sum(e.attention_mask) for e in encoded),
        "seconds": seconds,
        "load_s": load_s,
        "ort_threads": embedder.threads,
        "affinity": sorted(os.sched_getaffinity(0)),
    }


class _AffinityProbe:
    """Records, ten times a second, the cores each named thread and each child process may run on.

    Evidence that the layout asked for is the layout that ran: a thread's affinity is read from
    its native id, a parsing worker's from psutil.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.seen: dict[str, set[tuple[int, ...]]] = {}
        self._roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-affinity", daemon=True)

    def __enter__(self) -> _AffinityProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _note(self, name: str, cpus: set[int]) -> None:
        self.seen.setdefault(name, set()).add(tuple(sorted(cpus)))

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self.interval):
            for thread in threading.enumerate():
                if thread is self._thread or thread.native_id is None:
                    continue
                try:
                    self._note(thread.name, os.sched_getaffinity(thread.native_id))
                except OSError:
                    continue  # the thread ended between listing and reading
            try:
                children = me.children(recursive=True)
            except psutil.Error:
                continue
            for child in children:
                try:
                    role = self._roles.get(child.pid)
                    if role is None:
                        cmdline = child.cmdline()
                        if not cmdline:
                            continue  # still starting or already gone: nothing to tell yet
                        role = self._roles[child.pid] = _role(cmdline, child.pid)
                    self._note(role, set(child.cpu_affinity()))
                except psutil.Error:
                    continue

    def report(self) -> dict[str, list[list[int]]]:
        return {name: [list(c) for c in sorted(cpus)] for name, cpus in sorted(self.seen.items())}


def _role(cmdline: Sequence[str], pid: int) -> str:
    """A child process's part in the run, from its command line."""
    line = " ".join(cmdline)
    if "resource_tracker" in line:
        return "process: multiprocessing resource tracker"
    if "spawn_main" in line or "forkserver" in line:
        return f"process: worker {pid}"
    return f"process: {pid} {line[:60]}"


def _child_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    import vectorstream

    embedder, load_s = _load(args.model_dir)
    with _AffinityProbe() as probe:
        start = time.perf_counter()
        report = vectorstream.ingest(
            [str(args.corpus)],
            store=f"lancedb://{args.db}",
            collection=COLLECTION,
            model=embedder,
            workers=1,
            inference_cpus=(args.inference_cpu,),
            io_cpus=(args.io_cpu,),
        )
        seconds = time.perf_counter() - start
    return {
        "chunks": report.chunks,
        "tokens": report.tokens,
        "seconds": seconds,
        "reported_s": report.seconds,
        "load_s": load_s,
        "files_ok": report.files_ok,
        "files_failed": report.files_failed,
        "report_peak_rss_mib": mib(report.peak_rss_bytes),
        "stage_seconds": dict(report.stage_seconds),
        "ort_threads": embedder.threads,
        "affinity_seen": probe.report(),
    }


CHILDREN: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "prepare": _child_prepare,
    "limit": _child_limit,
    "pipeline": _child_pipeline,
}


def child_main(args: argparse.Namespace) -> int:
    try:
        result: dict[str, Any] = {"ok": True, **CHILDREN[args.kind](args)}
    except BaseException as exc:  # the parent reports the failure with its traceback
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        result["traceback"] = traceback.format_exc()[-3000:]
    write_json(args.result, result)
    return 0 if result["ok"] else 1


# ======================================================================== parent side


class Bench:
    """Runs the children in rounds and gathers their results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work: Path = args.work
        self.texts_file = self.work / "chunk_texts.json"
        self.env = {**os.environ, "TOKENIZERS_PARALLELISM": "true", "PYTHONWARNINGS": "ignore"}

    def child(self, kind: str, *extra: str) -> dict[str, Any]:
        result_file = self.work / f"{kind}.result.json"
        result_file.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "child",
            kind,
            "--result",
            str(result_file),
            "--model-dir",
            str(self.args.model_dir),
            "--inference-cpu",
            str(self.args.inference_cpu),
            "--io-cpu",
            str(self.args.io_cpu),
            *extra,
        ]
        measured = run_measured(cmd, env=self.env, timeout=self.args.timeout)
        try:
            result = json.loads(result_file.read_text())
        except (OSError, json.JSONDecodeError):
            reason = "timed out" if measured.timed_out else f"exit code {measured.returncode}"
            raise SystemExit(
                f"{kind} run gave no result ({reason}):\n{measured.stderr_tail}"
            ) from None
        if not result.get("ok"):
            raise SystemExit(f"{kind} run failed: {result['error']}\n{result.get('traceback', '')}")
        result.update(wall_s=measured.wall_s, peak_rss_mib=mib(measured.peak_rss_bytes))
        if result.get("seconds"):
            result["tokens_per_s"] = result["tokens"] / result["seconds"]
            result["chunks_per_s"] = result["chunks"] / result["seconds"]
        return result

    def pipeline(self, corpus: Path, round_no: int) -> dict[str, Any]:
        db = self.work / "db" / f"pipeline-{round_no}"
        shutil.rmtree(db, ignore_errors=True)
        db.mkdir(parents=True)
        result = self.child("pipeline", "--corpus", str(corpus), "--db", str(db))
        if not self.texts_file.exists():
            texts = _stored_texts(db)
            if len(texts) != result["chunks"]:
                raise SystemExit(
                    f"the store holds {len(texts)} rows, the report {result['chunks']}"
                )
            self.texts_file.write_text(json.dumps(texts), "utf-8")
        shutil.rmtree(db, ignore_errors=True)  # x10 stores are large; each round writes afresh
        return result

    def limit(self) -> dict[str, Any]:
        return self.child(
            "limit", "--texts", str(self.texts_file), "--window", str(self.args.limit_window)
        )


def _stored_texts(db: Path) -> list[str]:
    """The chunk texts the pipeline wrote, which the limit then embeds."""
    import lancedb

    table = lancedb.connect(str(db)).open_table(COLLECTION).to_arrow()
    texts: list[str] = table.column("text").to_pylist()
    return texts


def _check_cores(inference: int, io: int) -> None:
    usable = os.sched_getaffinity(0)
    if inference == io:
        raise SystemExit(f"--inference-cpu and --io-cpu must differ, both are {inference}")
    missing = sorted({inference, io} - usable)
    if missing:
        raise SystemExit(
            f"cores {missing} are not usable here (this process may use {sorted(usable)}); "
            "choose two with --inference-cpu and --io-cpu"
        )


def _summary(runs: Sequence[dict[str, Any]], name: str) -> dict[str, Any]:
    row: dict[str, Any] = {"run": name, "rounds": len(runs)}
    for key in ("chunks", "tokens", "load_s", "seconds", "tokens_per_s", "peak_rss_mib"):
        row[key] = median([r[key] for r in runs if r.get(key) is not None])
    return row


def parent_main(args: argparse.Namespace) -> int:
    from vectorstream.samples import build_sample_corpus

    _check_cores(args.inference_cpu, args.io_cpu)
    own_work = args.work is None
    args.work = Path(tempfile.mkdtemp(prefix="vs-free-core-")) if own_work else args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "chunk_texts.json").unlink(missing_ok=True)
    started = time.perf_counter()
    machine = machine_info()
    try:
        corpus = build_sample_corpus(
            args.work / f"corpus-x{args.scale}", documents=args.documents, scale=args.scale
        )
        _log(f"corpus x{args.scale}: {corpus.files} files, {corpus.bytes / 2**20:.1f} MiB")
        bench = Bench(args)
        bench.child("prepare")
        rounds: list[dict[str, Any]] = []
        for round_no in range(1, args.repeats + 1):
            _log(f"round {round_no}: pipeline")
            pipe = bench.pipeline(corpus.path, round_no)
            _log(f"round {round_no}: limit")
            lim = bench.limit()
            ratio = pipe["tokens_per_s"] / lim["tokens_per_s"]
            _log(
                f"round {round_no}: pipeline {pipe['tokens_per_s']:,.0f} tokens/s, "
                f"limit {lim['tokens_per_s']:,.0f} tokens/s, ratio {ratio:.3f}"
            )
            rounds.append({"round": round_no, "pipeline": pipe, "limit": lim, "ratio": ratio})
    finally:
        if own_work:
            shutil.rmtree(args.work, ignore_errors=True)

    pipes = [r["pipeline"] for r in rounds]
    limits = [r["limit"] for r in rounds]
    summary = [_summary(limits, "limit (model alone)"), _summary(pipes, "pipeline")]
    stage_seconds = {
        stage: median([p["stage_seconds"][stage] for p in pipes if stage in p["stage_seconds"]])
        for stage in pipes[0]["stage_seconds"]
    }
    ratio = statistics.median(r["ratio"] for r in rounds)
    data: dict[str, Any] = {
        "benchmark": "free_core",
        "machine": machine,
        "versions": package_versions(VERSIONED),
        "config": {
            "documents": args.documents,
            "scale": args.scale,
            "repeats": args.repeats,
            "quick": args.quick,
            "inference_cpu": args.inference_cpu,
            "io_cpu": args.io_cpu,
            "ort_threads": 1,
            "precision": "fp32",
            "parsing_workers": 1,
            "limit_window": args.limit_window or "all",
            "bench_seconds": time.perf_counter() - started,
            "loadavg_end": round(os.getloadavg()[0], 2),
        },
        "corpus": {
            "files": corpus.files,
            "bytes": corpus.bytes,
            "by_format": dict(corpus.by_format),
        },
        "summary": summary,
        "stage_seconds_median": stage_seconds,
        "rounds": [
            {
                "round": r["round"],
                "limit_tokens_per_s": r["limit"]["tokens_per_s"],
                "pipeline_tokens_per_s": r["pipeline"]["tokens_per_s"],
                "ratio": r["ratio"],
            }
            for r in rounds
        ],
        "goal": {
            "goal": "pipeline ÷ single-core limit (tokens/s, median of the rounds' ratios)",
            "value": ratio,
            "target": f"≥ {GOAL}",
            "met": ratio >= GOAL,
            "on_goal_corpus": not args.quick and args.scale == 10,
        },
        "runs": rounds,
    }
    out = write_json(args.out, data)

    print(format_table(summary, list(summary[0])))
    print()
    print(format_table(data["rounds"], list(data["rounds"][0])))
    print()
    print("pipeline busy seconds per stage (median): " + json.dumps(stage_seconds))
    print(f"cores seen per thread and process: {json.dumps(pipes[-1]['affinity_seen'])}")
    print(
        f"pipeline ÷ limit: {ratio:.3f} (goal ≥ {GOAL}) in {data['config']['bench_seconds']:.0f} s"
    )
    print(f"\nwrote {out}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode")
    child = sub.add_parser("child", help="(internal) run one measurement")
    child.add_argument("kind", choices=sorted(CHILDREN))
    child.add_argument("--result", type=Path, required=True)
    child.add_argument("--model-dir", type=Path, required=True)
    child.add_argument("--inference-cpu", type=int, required=True)
    child.add_argument("--io-cpu", type=int, required=True)
    child.add_argument("--corpus", type=Path)
    child.add_argument("--db", type=Path)
    child.add_argument("--texts", type=Path)
    child.add_argument("--window", type=int, default=0)

    parser.add_argument(
        "--documents", type=int, default=None, help="source documents of the x1 corpus (40)"
    )
    parser.add_argument("--scale", type=int, default=10, help="corpus multiplier (goal: 10)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of pipeline + limit")
    parser.add_argument(
        "--quick", action="store_true", help="5 documents, x1, 1 round: proves the harness works"
    )
    parser.add_argument("--inference-cpu", type=int, default=0, help="the model's core")
    parser.add_argument("--io-cpu", type=int, default=1, help="parsing, tokenising, writing")
    parser.add_argument(
        "--limit-window",
        type=int,
        default=0,
        help="chunks per embed_tokenized call in the limit (0: all at once, sorted globally)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: temporary)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "free_core.json")
    parser.add_argument("--model-dir", type=Path, default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.mode == "child":
        return child_main(args)
    if args.quick:
        args.scale, args.repeats = 1, 1
    args.documents = args.documents or (5 if args.quick else 40)
    args.model_dir = args.model_dir or minilm_dir()
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
