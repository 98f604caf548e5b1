"""Long contexts that stay small: sparse decoding from a memory-mapped ContextDB vs full attention.

For each length (16K and 32K tokens of standard-library documentation, beyond SmolLM2's trained
length; sparse and full attention see the same positions, so their agreement still measures the
approximation) the context is prefilled once, in exact chunks, and stored in a ``ContextDB``; a
longer context reuses the stored shorter one as its prefix. Each method then runs in its own
process, so resident memory is comparable:

- **full**: the stored keys and values read into memory, exact attention (SDPA) at every step;
  ``--timed`` decode steps give tokens/s, then the ``--steps`` continuation tokens run as one exact
  chunk on the same cache (identical to step-by-step full attention up to float rounding) and give
  the reference next tokens.
- **sparse**: the context memory-mapped (``ContextDB.create_session``), window + DIPR at ``--alpha``
  by the package's rule (flat scan over the bfloat16 sketch at these lengths); ``--steps``
  teacher-forced decode steps give tokens/s over the same ``--timed`` steps and top-1 agreement with
  full attention over all of them.

With ``--kv-dtype float16`` the sparse method reads a float16 copy of each stored context (a
database beside ``--db``, written from the float32 one exactly as ``ContextDB(kv_dtype="float16")``
stores it); full attention keeps the model's float32 keys and values, as a user would run it.

Resident memory (VmRSS, and its anonymous and file-backed parts from /proc/self/status) is sampled
after every timed step; the maximum is reported, with the model alone measured before the context
is opened.

    .venv/bin/python benchmarks/attention/long_context.py --lengths 16384 32768
    .venv/bin/python benchmarks/attention/long_context.py --model tiny --quick
    .venv/bin/python benchmarks/attention/long_context.py --lengths 32768 --yarn 4 --alpha 1e-4 \\
        --kv-dtype float16 --rounds 3 --db /tmp/vs_long_context_yarn   # the 32K goal

Prints a table and writes benchmarks/results/attention_long_context.json.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

# The shared helpers beside this script (named apart from benchmarks/_common.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _attention_common as C

COLUMNS = ["length", "method", "tok_s", "speedup", "top1", "rss_mb", "rss_share", "attended"]


def memory() -> dict[str, float]:
    """VmRSS, RssAnon and RssFile of this process, in MiB (Linux)."""
    out: dict[str, float] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) / 1024
    return out


def prepare(model: Any, db: Any, ids: list[int], lengths: list[int], chunk: int) -> list[str]:
    """Store ``ids[:L]`` for each L (exact chunked prefill, reusing the longest stored prefix)."""
    stored = []
    for length in sorted(lengths):
        context = ids[:length]
        found, common = db.longest_prefix(context)
        sizes = {info.id: info.n_tokens for info in db.contexts()}
        if found is not None and common == length and sizes[found] == length:
            stored.append(found)
            continue
        session, rest = db.create_session(context, C.SparseConfig(mode="full"), mmap=False)
        start = time.perf_counter()
        with torch.inference_mode():
            for a in range(0, len(rest), chunk):
                part = rest[a : a + chunk]
                C.forward(model, torch.tensor([part]), session, logits_to_keep=1)
                session.token_ids.extend(part)
                print(
                    f"prefill {length}: {len(context) - len(rest) + a + len(part)} tokens, "
                    f"{time.perf_counter() - start:.0f} s",
                    flush=True,
                )
        stored.append(db.store(session, build_index=False))
        del session
    return stored


def half_db(db: str) -> str:
    """The float16 copy of database ``db``."""
    return f"{db.rstrip('/')}-float16"


def half_copies(db: str, ids: list[int], lengths: list[int]) -> None:
    """Copy each stored context of ``db`` into its float16 database (once)."""
    source = C.ContextDB(db)
    target = C.ContextDB(half_db(db), kv_dtype="float16")
    have = {info.n_tokens for info in target.contexts()}
    for length in sorted(lengths):
        found, common = source.longest_prefix(ids[:length])
        if length in have or found is None or common != length:
            continue
        target.import_context(
            ids[:length], source.load_kv(found, length, mmap=True), build_index=False
        )
        print(f"float16 copy of {length} tokens stored", flush=True)


def run_method(args: argparse.Namespace) -> dict[str, Any]:
    """One method in this process: timings, next-token predictions and memory."""
    C.set_threads(args.threads)
    model, _ = C.load_model(args.model, args.yarn)
    ids = [int(t) for t in Path(args.ids).read_text().split()]
    context, feed = ids[: args.length], ids[args.length : args.length + args.steps]
    # Give the heap freed while de-quantising the GGUF back to the system (both methods alike).
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    mem_model = memory()
    sparse_half = args.method == "sparse" and args.kv_dtype == "float16"
    db = C.ContextDB(half_db(args.db) if sparse_half else args.db)
    window = {"n_init": args.n_init, "n_last": args.n_last, "max_queries": 0}
    if args.method == "full":
        cfg = C.SparseConfig(mode="full", **window)
        mapped = False
    else:
        cfg = C.SparseConfig(
            alpha=args.alpha,
            release_pages=not args.keep_pages,
            sketch_resident_bytes=int(args.sketch_resident_mib * 2**20),
            **window,
        )
        mapped = True
    start = time.perf_counter()
    session, rest = db.create_session(context + feed[:1], cfg, mmap=mapped)
    assert rest == feed[:1], "the context must be stored (run without --method first)"
    mem_open = memory()
    times: list[float] = []
    samples: list[dict[str, float]] = []
    preds: list[int] = []
    n_steps = args.timed if args.method == "full" else args.steps
    with torch.inference_mode():
        for i in range(n_steps):
            t0 = time.perf_counter()
            out = C.forward(model, torch.tensor([[feed[i]]]), session)
            times.append(time.perf_counter() - t0)
            if i == 0:
                first_token_s = time.perf_counter() - start
            preds.append(int(out.logits[0, -1].argmax()))
            samples.append(memory())
        if args.method == "full":
            # Reference next tokens over all steps: the rest of the continuation as one exact chunk.
            session.crop(-n_steps)
            logits = C.forward(model, torch.tensor([feed]), session).logits[0]
            preds = [int(x) for x in logits.argmax(-1).tolist()]
    warm = times[args.warmup : args.timed]
    stats = session.stats
    return {
        "length": args.length,
        "method": args.method,
        "alpha": None if args.method == "full" else args.alpha,
        "mmap": mapped,
        "kv_dtype": "float16" if sparse_half else "float32",
        "tok_s": len(warm) / sum(warm) if warm else None,
        "step_ms_median": sorted(warm)[len(warm) // 2] * 1000 if warm else None,
        "first_token_s": first_token_s,
        "attended": C.mean_fraction(stats) if args.method != "full" else 1.0,
        "preds": preds,
        "memory_model_mb": mem_model,
        "memory_open_mb": mem_open,
        "memory_decode_mb": {k: max(s[k] for s in samples) for k in samples[0]},
    }


def child(args: argparse.Namespace, method: str, length: int, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--method",
        method,
        "--length",
        str(length),
        "--result",
        str(out),
    ]
    for name in ("model", "db", "ids", "alpha", "steps", "timed", "warmup", "threads", "yarn"):
        cmd += [f"--{name}", str(getattr(args, name))]
    if args.keep_pages:
        cmd.append("--keep-pages")
    cmd += ["--sketch-resident-mib", str(args.sketch_resident_mib), "--kv-dtype", args.kv_dtype]
    cmd += ["--n-init", str(args.n_init), "--n-last", str(args.n_last)]
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(parser, lengths=[16384, 32768], alphas=[1e-3])
    parser.add_argument("--alpha", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=256, help="teacher-forced steps (agreement)")
    parser.add_argument("--timed", type=int, default=40, help="steps timed and sampled for RSS")
    parser.add_argument("--warmup", type=int, default=4, help="first timed steps left out")
    parser.add_argument("--chunk", type=int, default=1024, help="prefill chunk (tokens)")
    parser.add_argument("--db", default=str(Path(tempfile.gettempdir()) / "vs_long_context_db"))
    parser.add_argument("--ids", default=None)
    parser.add_argument("--prefill-threads", type=int, default=2)
    parser.add_argument(
        "--yarn",
        type=float,
        default=0.0,
        help="stretch positions by this factor with YaRN (both methods; use another --db)",
    )
    parser.add_argument(
        "--keep-pages",
        action="store_true",
        help="sparse: keep the context's pages resident (faster steps, more memory)",
    )
    parser.add_argument(
        "--sketch-resident-mib",
        type=float,
        default=0.0,
        help="sparse, pages given back: MiB of int8 sketches kept resident between steps",
    )
    parser.add_argument(
        "--kv-dtype",
        choices=["model", "float16"],
        default="model",
        help="sparse: read a float16 copy of the stored contexts (full keeps the model's dtype)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="full/sparse pairs per length (median ratio)"
    )
    parser.add_argument("--prepare-only", action="store_true", help="store the contexts, no runs")
    parser.add_argument("--method", choices=["full", "sparse"], default=None)
    parser.add_argument("--length", type=int, default=None)
    parser.add_argument("--result", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths, args.steps, args.timed, args.chunk = [1024, 2048], 24, 12, 512
        args.n_last = 128
    if args.method is not None:
        args.result.write_text(json.dumps(run_method(args)))
        return

    C.set_threads(args.prefill_threads)
    model, tok = C.load_model(args.model, args.yarn)
    ids = C.text_ids(tok, max(args.lengths) + args.steps + 1)
    Path(args.db).mkdir(parents=True, exist_ok=True)
    args.ids = str(Path(args.db) / f"ids_{args.model}.txt")
    Path(args.ids).write_text(" ".join(map(str, ids)))
    prepare(model, C.ContextDB(args.db), ids, args.lengths, args.chunk)
    del model
    if args.kv_dtype == "float16":
        half_copies(args.db, ids, args.lengths)
    if args.prepare_only:
        return

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for length in args.lengths:
            # Full and sparse alternate, round after round, so a shared machine's drifting load
            # hits both alike; each round's speed ratio is kept and the median reported.
            pairs = []
            for round_no in range(args.rounds):
                full = child(args, "full", length, Path(tmp) / f"full{round_no}.json")
                sparse = child(args, "sparse", length, Path(tmp) / f"sparse{round_no}.json")
                pairs.append((full, sparse))
            ratios = [s["tok_s"] / f["tok_s"] for f, s in pairs]
            middle = sorted(range(len(pairs)), key=lambda i: ratios[i])[len(pairs) // 2]
            full, sparse = pairs[middle]
            agree = sum(a == b for a, b in zip(full["preds"], sparse["preds"], strict=True))
            agree_share = agree / len(full["preds"])
            for r in (full, sparse):
                r["top1"] = agree_share if r is sparse else 1.0
                r["speedup"] = r["tok_s"] / full["tok_s"]
                r["speedup_rounds"] = ratios if r is sparse else None
                r["rss_mb"] = r["memory_decode_mb"]["VmRSS"]
                r["rss_share"] = r["rss_mb"] / full["memory_decode_mb"]["VmRSS"]
                r.pop("preds")
                rows.append(r)
            print(C.format_table(rows[-2:], COLUMNS), flush=True)
            print(f"speed ratio by round: {', '.join(f'{x:.2f}' for x in ratios)}", flush=True)
    payload = {
        "machine": C.machine(args.threads),
        "model": args.model,
        "settings": {
            "alpha": args.alpha,
            "yarn": args.yarn,
            "release_pages": not args.keep_pages,
            "sketch_resident_mib": args.sketch_resident_mib,
            "kv_dtype": args.kv_dtype,
            "n_init": args.n_init,
            "n_last": args.n_last,
            "steps": args.steps,
            "timed": args.timed,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "sketch_min": C.SparseConfig().sketch_min,
        },
        "rows": rows,
    }
    path = C.write_result("long_context", payload, args.out)
    print(C.format_table(rows, COLUMNS))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
