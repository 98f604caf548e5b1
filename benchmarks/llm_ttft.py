"""Time to first token of the served LLM: a question after a stored document vs. recomputing it.

Two instances of the service (the ASGI app, driven in-process over HTTP by httpx) with the same
SmolLM2 weights: one holds the document as a stored context (``POST /v1/contexts``, timed too),
the other stores nothing (on-the-fly storing off). Both answer the same streamed chat request, a
~16-token question after the document; the time to the first content chunk is measured from the
request. Writes ``benchmarks/results/llm_ttft.json``.

    .venv/bin/python benchmarks/llm_ttft.py [--document-tokens 8000] [--repeats 3] [--threads 0]

The stored-context side is repeated and its best time kept (the least disturbed by other work);
the recomputing side runs once (it takes minutes). On a machine shared with other jobs, pass
``--threads 1``: two torch threads that wait for each other are several times slower there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, write_json

RESULT = Path(__file__).resolve().parent / "results" / "llm_ttft.json"
QUESTION = (
    "Which Python module does the documentation above describe first? Answer in one short sentence."
)


def document(tokenizer: Any, n_tokens: int) -> str:
    """A plain-text document (standard-library documentation) of about ``n_tokens`` tokens."""
    from vectorstream.samples import build_sample_corpus

    with tempfile.TemporaryDirectory() as tmp:
        build_sample_corpus(tmp, documents=60, formats=("txt",), seed=0)
        text = "\n\n".join(p.read_text(errors="replace") for p in sorted(Path(tmp).glob("*.txt")))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]
    return str(tokenizer.decode(ids))


async def first_token(client: Any, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Seconds from sending ``body`` (streamed) to its first content chunk, and the final usage."""
    started = time.perf_counter()
    ttft = None
    usage: dict[str, Any] = {}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices", []):
                if ttft is None and choice["delta"].get("content"):
                    ttft = time.perf_counter() - started
    assert ttft is not None, "no token came back"
    return ttft, usage


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _server_support import FakeEmbedder, client_for
    from vectorstream.attention._llm_load import load_llm
    from vectorstream.server import create_app
    from vectorstream.server.settings import ServerSettings

    load_before = os.getloadavg()
    started = time.perf_counter()
    llm = load_llm("smollm2")
    load_s = time.perf_counter() - started
    doc = document(llm.tokenizer, args.document_tokens)
    question_tokens = len(llm.tokenizer(QUESTION, add_special_tokens=False)["input_ids"])
    tmp = Path(tempfile.mkdtemp(prefix="llm-ttft-"))

    def app(name: str) -> Any:
        settings = ServerSettings(
            store=f"lancedb://{tmp / 'store'}",
            collection="docs",
            llm="smollm2",
            llm_contexts=str(tmp / name),
            llm_store_min_tokens=0,  # nothing stored on the fly: the baseline stays a baseline
        )
        return create_app(settings, model=FakeEmbedder(), llm=llm)

    # One token: the in-process transport hands the stream over when the answer is complete, so
    # the first chunk's arrival is the first token's only when it is also the last.
    ask = {
        "max_tokens": 1,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    rows: list[dict[str, Any]] = []
    async with client_for(app("stored")) as stored, client_for(app("none")) as plain:
        stored.timeout = plain.timeout = 3600
        t0 = time.perf_counter()
        made = await stored.post(
            "/v1/contexts", json={"messages": [{"role": "user", "content": doc}]}
        )
        made.raise_for_status()
        store_s = time.perf_counter() - t0
        context = made.json()
        for repeat in range(args.repeats):
            ttft, usage = await first_token(
                stored,
                {
                    **ask,
                    "context": context["id"],
                    "messages": [{"role": "user", "content": QUESTION}],
                },
            )
            rows.append({"server": "stored context", "repeat": repeat, "ttft_s": ttft, **usage})
        for repeat in range(args.baseline_repeats):
            ttft, usage = await first_token(
                plain,
                {
                    **ask,
                    "messages": [
                        {"role": "user", "content": doc},
                        {"role": "user", "content": QUESTION},
                    ],
                },
            )
            rows.append({"server": "no stored context", "repeat": repeat, "ttft_s": ttft, **usage})
    stored_best = min(r["ttft_s"] for r in rows if r["server"] == "stored context")
    plain_best = min(r["ttft_s"] for r in rows if r["server"] == "no stored context")
    import torch

    return {
        "benchmark": "llm_ttft",
        "model": llm.model_id,
        "document_tokens": context["tokens"],
        "question_tokens": question_tokens,
        "store_context_s": store_s,
        "load_s": load_s,
        "rows": rows,
        "ttft_stored_s": stored_best,
        "ttft_recompute_s": plain_best,
        "speedup": plain_best / stored_best,
        "torch_threads": torch.get_num_threads(),
        "machine": machine_info(),
        # Other jobs shared the cores: the load average says how much (2 means two busy cores).
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--document-tokens", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = asyncio.run(run(args))
    write_json(RESULT, result)
    print(
        f"{result['document_tokens']}-token document, {result['question_tokens']}-token question: "
        f"first token after {result['ttft_stored_s']:.2f} s with the stored context, "
        f"{result['ttft_recompute_s']:.2f} s recomputing ({result['speedup']:.0f}x)"
    )


if __name__ == "__main__":
    main()
