"""Soak of the served LLM: 100 questions over 3 stored contexts, 4 at a time, sampling the server's RSS.

    .venv/bin/python benchmarks/llm_soak.py            # 100 questions: a few minutes on 2 cores
    .venv/bin/python benchmarks/llm_soak.py --quick    # 12 questions: proves the harness

``vectorstream serve --llm smollm2`` runs as its own process (uvicorn on a free loopback port, one
torch thread through ``OMP_NUM_THREADS``, ``--llm-queue 8``: four clients never fill it). Three
texts of standard-library documentation (~600 words each, ``vectorstream.samples``) are stored as
contexts (``POST /v1/contexts``); then the official ``openai`` client asks the questions, streamed,
greedy, ``max_tokens`` 8, each naming one of the contexts in turn, four requests in flight at once.
Every failure is counted by its type. The resident memory of the server's whole process tree is
sampled every 0.5 s.

Goal: no errors, and no memory growth after the warm-up: the RSS at the end (median of the last 5
samples before the last answer) at most 10 MiB above the RSS after the first 20 answers (median of
the 5 samples that follow the 20th). Writes ``benchmarks/results/llm_soak.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _common import MIB, format_table, machine_info, percentile, write_json
from _server_support import MODEL_DIR, serve_process

RESULT = Path(__file__).resolve().parent / "results" / "llm_soak.json"
GROWTH_LIMIT_MIB = 10.0
QUESTIONS = (
    "Which Python module does the text above describe?",
    "Name one function or class the text above documents.",
    "In five words, what is this module for?",
    "Does the text above mention files? Answer yes or no.",
    "What is the first word of the text above?",
)


def context_texts(words: int) -> list[tuple[str, str]]:
    """Three (module, text) pairs: the first ``words`` words of three long module docs."""
    from vectorstream.samples import build_sample_corpus

    with tempfile.TemporaryDirectory() as tmp:
        build_sample_corpus(tmp, documents=12, formats=("txt",), seed=0)
        docs = [(p.stem.split("_", 1)[1], p.read_text()) for p in sorted(Path(tmp).glob("*.txt"))]
    long = [(name, text) for name, text in docs if len(text.split()) >= words]
    if len(long) < 3:
        raise SystemExit(f"fewer than 3 sample documents of {words} words")
    return [(name, " ".join(text.split()[:words])) for name, text in long[:3]]


class RSSTrace:
    """Samples the RSS of a process tree every ``interval`` s, tagged with the answers so far."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid = pid
        self.interval = interval
        self.answered = 0  # set by the load generator; read with each sample
        self.samples: list[tuple[float, int, int]] = []  # (seconds, answered, bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-trace", daemon=True)

    def __enter__(self) -> RSSTrace:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        started = time.perf_counter()
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                return  # the server is gone
            total = 0
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue  # a child exited between listing and reading
            self.samples.append((time.perf_counter() - started, self.answered, total))
            self._stop.wait(self.interval)


def drain(stream: Any, tail: collections.deque[str]) -> None:
    """Read the server's output so its pipe never fills; keep the last lines."""
    for line in iter(stream.readline, b""):
        tail.append(line.decode(errors="replace").rstrip())


async def ask(client: Any, context_id: str, question: str) -> dict[str, Any]:
    """One streamed, greedy question after a stored context: timings, usage, server's figures."""
    started = time.perf_counter()
    ttft = None
    parts: list[str] = []
    usage = None
    finish = None
    served: dict[str, Any] = {}
    events = await client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": question}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"context": context_id},
    )
    async for event in events:
        if event.choices:
            choice = event.choices[0]
            if choice.delta.content:
                if ttft is None:
                    ttft = time.perf_counter() - started
                parts.append(choice.delta.content)
            finish = choice.finish_reason or finish
        if event.usage is not None:
            usage = event.usage
        served = (event.model_extra or {}).get("vectorstream") or served
    if usage is None or finish is None:
        raise RuntimeError("the stream ended without a finish reason or usage")
    details = usage.prompt_tokens_details
    return {
        "latency_s": time.perf_counter() - started,
        "ttft_s": ttft,
        "server_ttft_s": served.get("time_to_first_token_s"),
        "reused_context": served.get("reused_context"),
        "cached_tokens": details.cached_tokens if details else 0,
        "completion_tokens": usage.completion_tokens,
        "text": "".join(parts),
    }


async def soak(
    base: str, contexts: list[dict[str, Any]], questions: int, concurrency: int, trace: RSSTrace
) -> tuple[list[dict[str, Any]], collections.Counter[str], float]:
    import openai

    plan = [
        (
            i,
            contexts[i % len(contexts)],
            f"Q{i + 1}. {QUESTIONS[i // len(contexts) % len(QUESTIONS)]}",
        )
        for i in range(questions)
    ]
    pending = collections.deque(plan)
    rows: list[dict[str, Any]] = []
    errors: collections.Counter[str] = collections.Counter()
    async with openai.AsyncOpenAI(
        base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=600
    ) as client:

        async def worker() -> None:
            while pending:
                i, context, question = pending.popleft()
                try:
                    row = await ask(client, context["id"], question)
                except Exception as exc:  # counted by type: the soak's result, not a crash
                    errors[type(exc).__name__] += 1
                else:
                    if row["cached_tokens"] != context["tokens"]:
                        errors["context_not_reused"] += 1
                    rows.append({"question": i, "context": context["module"], **row})
                trace.answered += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return rows, errors, elapsed


def memory(trace: RSSTrace, warmup: int, questions: int) -> dict[str, Any]:
    """RSS after the warm-up, at the end, its growth, and a trace of the whole run."""
    samples = trace.samples
    # Both ends are taken under load (requests in flight hold some memory of their own, ~15 MiB
    # here), so they compare like with like; the idle server after the last answer is reported too.
    after_warmup = [s for s in samples if warmup <= s[1] < questions]
    warm = statistics.median(s[2] for s in after_warmup[:5])
    end = statistics.median(s[2] for s in after_warmup[-5:])
    idle = [s[2] for s in samples if s[1] >= questions]
    # Least-squares slope of RSS over answers after the warm-up: a leak climbs steadily.
    xs = [float(s[1]) for s in after_warmup]
    ys = [s[2] / MIB for s in after_warmup]
    slope = None
    if len(set(xs)) > 1:
        mx, my = statistics.mean(xs), statistics.mean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mx) ** 2 for x in xs
        )
    step = max(1, len(samples) // 40)
    return {
        "rss_start_mib": samples[0][2] / MIB,
        "rss_after_warmup_mib": warm / MIB,
        "rss_end_mib": end / MIB,
        "rss_idle_end_mib": statistics.median(idle) / MIB if idle else None,
        "rss_max_mib": max(s[2] for s in samples) / MIB,
        "rss_max_after_warmup_mib": max(ys) if ys else None,
        "growth_mib": (end - warm) / MIB,
        "growth_pct": 100 * (end - warm) / warm,
        "slope_mib_per_100_questions": None if slope is None else 100 * slope,
        "samples": len(samples),
        # (seconds, answers so far, MiB), about 40 points over the run
        "rss_trace": [(round(t, 1), n, round(b / MIB, 1)) for t, n, b in samples[::step]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="12 questions: check the harness")
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20, help="answers before the RSS baseline")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--context-words", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args()
    if args.quick:
        args.questions, args.warmup, args.context_words = 12, 4, 200

    import openai

    texts = context_texts(args.context_words)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vectorstream-llm-soak-") as folder:
        cli = [
            "--model",
            str(MODEL_DIR),
            "--store",
            f"lancedb://{folder}/store",
            "--llm",
            "smollm2",
            "--llm-contexts",
            f"{folder}/ctx",
            "--llm-queue",
            str(max(8, args.concurrency)),
            "--log-level",
            "warning",
        ]
        env = {"OMP_NUM_THREADS": str(args.threads)}
        started = time.perf_counter()
        with serve_process(cli, env=env, timeout=600) as (base, process):
            start_s = time.perf_counter() - started
            tail: collections.deque[str] = collections.deque(maxlen=40)
            threading.Thread(target=drain, args=(process.stdout, tail), daemon=True).start()
            contexts = []
            with openai.OpenAI(base_url=f"{base}/v1", api_key="unused", timeout=600) as client:
                for module, text in texts:
                    t0 = time.perf_counter()
                    made = client.post(
                        "/contexts",
                        cast_to=dict,
                        body={"messages": [{"role": "system", "content": text}]},
                    )
                    store_s = time.perf_counter() - t0
                    contexts.append(
                        {"module": module, "id": made["id"], "tokens": made["tokens"]}
                        | {"bytes": made["bytes"], "store_s": store_s}
                    )
            with RSSTrace(process.pid) as trace:
                rows, errors, elapsed = asyncio.run(
                    soak(base, contexts, args.questions, args.concurrency, trace)
                )
                time.sleep(2.5)  # five more samples of the idle server after the last answer
            with openai.OpenAI(base_url=f"{base}/v1", api_key="unused") as client:
                stored_after = len(client.get("/contexts", cast_to=dict)["data"])
    mem = memory(trace, args.warmup, args.questions)
    latencies = [r["latency_s"] for r in rows]
    ttfts = [r["ttft_s"] for r in rows if r["ttft_s"] is not None]
    server_ttfts = [r["server_ttft_s"] for r in rows if r["server_ttft_s"] is not None]
    n_errors = sum(errors.values())
    summary = {
        "questions": args.questions,
        "answered": len(rows),
        "errors": n_errors,
        "concurrency": args.concurrency,
        "questions_per_s": len(rows) / elapsed,
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p99_s": percentile(ttfts, 99),
        "server_ttft_p50_s": percentile(server_ttfts, 50),
        "server_ttft_p99_s": percentile(server_ttfts, 99),
        **{k: v for k, v in mem.items() if k != "rss_trace"},
    }
    memory_ok = mem["growth_mib"] < GROWTH_LIMIT_MIB
    import importlib.metadata

    result = {
        "benchmark": "llm_soak",
        "quick": args.quick,
        "model": "smollm2",
        "config": {
            "questions": args.questions,
            "warmup_questions": args.warmup,
            "concurrency": args.concurrency,
            "max_tokens": 8,
            "temperature": 0,
            "torch_threads": args.threads,
            "llm_queue": max(8, args.concurrency),
            "context_words": args.context_words,
            "client": f"openai {importlib.metadata.version('openai')}",
        },
        "server_start_s": start_s,
        "contexts": contexts,
        "contexts_stored_at_end": stored_after,
        "elapsed_s": elapsed,
        "summary": summary,
        "errors_by_type": dict(errors),
        "empty_answers": sum(1 for r in rows if not r["text"].strip()),
        "rss_trace": mem["rss_trace"],
        "answers": rows,
        "goal": {
            "errors": "== 0",
            "growth_after_warmup_mib": f"< {GROWTH_LIMIT_MIB:g}",
            "errors_ok": n_errors == 0,
            "memory_ok": memory_ok,
        },
        "server_output_tail": list(tail),
        "machine": machine_info(),
        # Other jobs shared the cores: the load average says how much (2 means two busy cores).
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    print(format_table(contexts, ["module", "tokens", "bytes", "store_s"]))
    print()
    print(
        format_table(
            [summary],
            [
                "answered",
                "errors",
                "questions_per_s",
                "p50_s",
                "p99_s",
                "ttft_p50_s",
                "ttft_p99_s",
                "server_ttft_p50_s",
            ],
        )
    )
    print()
    print(
        format_table(
            [summary],
            [
                "rss_start_mib",
                "rss_after_warmup_mib",
                "rss_end_mib",
                "rss_idle_end_mib",
                "rss_max_mib",
                "growth_mib",
                "growth_pct",
                "slope_mib_per_100_questions",
            ],
        )
    )
    if errors:
        print(f"\nerrors by type: {dict(errors)}")
    print(
        f"\ngoal: 0 errors ({'met' if n_errors == 0 else 'missed'}), growth after "
        f"{args.warmup} answers < {GROWTH_LIMIT_MIB:g} MiB ({'met' if memory_ok else 'missed'})"
    )
    print(f"load average: {load_before} before, {os.getloadavg()} after")
    print(f"\nwrote {write_json(args.out, result)}")
    # A quick run proves the harness; its memory figures are too short to judge.
    sys.exit(0 if n_errors == 0 and (memory_ok or args.quick) else 1)


if __name__ == "__main__":
    main()
