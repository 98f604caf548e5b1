"""Every route and error code, in process (httpx ASGITransport, lifespan run by asgi-lifespan),
with the real model and a real LanceDB store."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from asgi_lifespan import LifespanManager

from _server_support import CORPUS, FakeEmbedder, build_store, client_for, real_model
from vectorstream.server import ServerSettings, create_app

Check = Callable[[httpx.AsyncClient], Coroutine[Any, Any, None]]


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = f"lancedb://{tmp_path_factory.mktemp('server-store')}"
    build_store(uri, "docs", real_model(), CORPUS)
    return uri


def settings(store_uri: str, **overrides: Any) -> ServerSettings:
    return ServerSettings(store=store_uri, collection="docs", **overrides)


def run(app: Any, check: Check, headers: dict[str, str] | None = None) -> None:
    async def main() -> None:
        async with client_for(app, headers=headers) as client:
            await check(client)

    asyncio.run(main())


def assert_openai_error(
    response: httpx.Response, status: int, param: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return error


# -- /v1/embeddings -------------------------------------------------------------------------------


def test_embeddings_match_the_library_in_float_and_base64(store_uri: str) -> None:
    model = real_model()
    texts = ["The cat sat on the mat.", "Vectors for every chunk, streamed."]
    expected = model.embed(texts)

    async def check(client: httpx.AsyncClient) -> None:
        r = await client.post("/v1/embeddings", json={"input": texts, "model": model.model_id})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "list" and body["model"] == model.model_id
        got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
        assert [d["index"] for d in body["data"]] == [0, 1]
        np.testing.assert_allclose(got, expected, atol=1e-5)
        tokens = sum(len(e.ids) for e in model.tokenize(texts))
        assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}

        r = await client.post(
            "/v1/embeddings", json={"input": texts[0], "encoding_format": "base64"}
        )
        row = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
        np.testing.assert_allclose(row, expected[0], atol=1e-5)

    run(create_app(settings(store_uri), model=model), check)


def test_embeddings_dimensions_cut_and_renormalise(store_uri: str) -> None:
    model = real_model()

    async def check(client: httpx.AsyncClient) -> None:
        r = await client.post("/v1/embeddings", json={"input": ["hello there"], "dimensions": 64})
        row = np.array(r.json()["data"][0]["embedding"])
        full = model.embed(["hello there"])[0][:64]
        assert row.shape == (64,)
        assert abs(np.linalg.norm(row) - 1.0) < 1e-5
        np.testing.assert_allclose(row, full / np.linalg.norm(full), atol=1e-5)
        assert_openai_error(
            await client.post("/v1/embeddings", json={"input": "x", "dimensions": 999}),
            400,
            "dimensions",
        )

    run(create_app(settings(store_uri), model=model), check)


def test_embeddings_limits_and_validation(store_uri: str) -> None:
    model = real_model()
    long_text = "word " * 400  # > 256 tokens

    async def check(client: httpx.AsyncClient) -> None:
        error = assert_openai_error(
            await client.post("/v1/embeddings", json={"input": long_text}), 400, "input"
        )
        assert "402 tokens" in error["message"] and "256" in error["message"]
        r = await client.post("/v1/embeddings", json={"input": long_text, "truncate": True})
        assert r.status_code == 200
        assert r.json()["usage"]["prompt_tokens"] == 256
        assert_openai_error(
            await client.post("/v1/embeddings", json={"input": ["a"] * 5}), 400, "input"
        )
        assert_openai_error(await client.post("/v1/embeddings", json={"input": []}), 400, "input")
        assert_openai_error(
            await client.post("/v1/embeddings", json={"input": ["ok", "  "]}), 400, "input"
        )
        assert_openai_error(await client.post("/v1/embeddings", json={"input": 42}), 422)
        assert_openai_error(
            await client.post("/v1/embeddings", json={"input": "x", "encoding_format": "hex"}), 422
        )
        r = await client.post(
            "/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert_openai_error(r, 422)
        error = assert_openai_error(
            await client.post("/v1/embeddings", json={"input": "x", "model": "gpt-9"}), 404, "model"
        )
        assert error["code"] == "model_not_found"

    run(create_app(settings(store_uri, max_inputs=4), model=model), check)


def test_a_lower_service_token_limit_truncates_on_request(store_uri: str) -> None:
    model = real_model()
    text = " ".join(f"w{i}" for i in range(100))

    async def check(client: httpx.AsyncClient) -> None:
        assert_openai_error(await client.post("/v1/embeddings", json={"input": text}), 400, "input")
        r = await client.post("/v1/embeddings", json={"input": text, "truncate": True})
        assert r.json()["usage"]["prompt_tokens"] <= 20

    run(create_app(settings(store_uri, max_tokens_per_input=20), model=model), check)


def test_body_size_limit_answers_413_with_and_without_content_length(store_uri: str) -> None:
    async def check(client: httpx.AsyncClient) -> None:
        payload = json.dumps({"input": "x" * 5000}).encode()
        assert_openai_error(
            await client.post(
                "/v1/embeddings", content=payload, headers={"content-type": "application/json"}
            ),
            413,
        )

        async def chunked() -> Any:
            for _ in range(10):
                yield b" " * 1000

        r = await client.post(
            "/v1/embeddings", content=chunked(), headers={"content-type": "application/json"}
        )
        assert_openai_error(r, 413)

    run(create_app(settings(store_uri, max_body_bytes=2048), model=FakeEmbedder()), check)


def test_api_key_is_required_when_configured(store_uri: str) -> None:
    async def check(client: httpx.AsyncClient) -> None:
        r = await client.post("/v1/embeddings", json={"input": "x"})
        assert_openai_error(r, 401)
        assert r.headers["www-authenticate"] == "Bearer"
        r = await client.post(
            "/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer wrong"}
        )
        assert_openai_error(r, 401)
        assert_openai_error(await client.get("/metrics"), 401)
        r = await client.post(
            "/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer s3cret"}
        )
        assert r.status_code == 200
        # Probes and the page stay reachable without the key.
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/static/app.js")).status_code == 200

    run(create_app(settings(store_uri, api_key="s3cret"), model=FakeEmbedder()), check)


def test_cors_is_off_by_default_and_on_when_configured(store_uri: str) -> None:
    preflight = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}

    async def off(client: httpx.AsyncClient) -> None:
        r = await client.post(
            "/v1/embeddings", json={"input": "x"}, headers={"Origin": "https://example.org"}
        )
        assert "access-control-allow-origin" not in r.headers
        r = await client.options("/v1/embeddings", headers=preflight)
        assert "access-control-allow-origin" not in r.headers

    async def on(client: httpx.AsyncClient) -> None:
        r = await client.options("/v1/embeddings", headers=preflight)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://example.org"

    run(create_app(settings(store_uri), model=FakeEmbedder()), off)
    run(
        create_app(
            settings(store_uri, api_key="k", cors_origins=("https://example.org",)),
            model=FakeEmbedder(),
        ),
        on,
    )


def test_a_full_queue_answers_503_with_retry_after(store_uri: str) -> None:
    slow = FakeEmbedder(delay=0.3)

    async def check(client: httpx.AsyncClient) -> None:
        first = asyncio.create_task(client.post("/v1/embeddings", json={"input": ["a", "b"]}))
        await asyncio.sleep(0.1)  # the first batch is running (0.3 s)
        second = asyncio.create_task(client.post("/v1/embeddings", json={"input": ["c", "d"]}))
        await asyncio.sleep(0.05)  # waiting in the queue: 2 inputs, the limit
        r = await client.post("/v1/embeddings", json={"input": "e"})
        error = assert_openai_error(r, 503)
        assert error["code"] == "queue_full"
        assert r.headers["retry-after"] == "1"
        assert (await first).status_code == 200
        assert (await second).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'vectorstream_rejected_total{reason="queue_full"} 1.0' in metrics
        assert (
            'vectorstream_requests_total{method="POST",route="/v1/embeddings",status="503"} 1.0'
            in metrics
        )

    run(create_app(settings(store_uri, queue_max_inputs=2), model=slow), check)


def test_concurrent_requests_are_batched_together(store_uri: str) -> None:
    fake = FakeEmbedder()

    async def check(client: httpx.AsyncClient) -> None:
        texts = [f"text number {i}" for i in range(16)]
        responses = await asyncio.gather(
            *(client.post("/v1/embeddings", json={"input": t}) for t in texts)
        )
        got = np.array([r.json()["data"][0]["embedding"] for r in responses])
        np.testing.assert_allclose(got, fake.embed(texts), atol=1e-6)  # each got its own row back
        assert (
            len(fake.calls) - 1 < 16
        )  # (minus the reference call above) fewer calls than requests
        assert max(fake.calls[:-1]) > 1

    run(create_app(settings(store_uri, batch_wait_ms=50), model=fake), check)


def test_a_model_failure_answers_500_in_the_error_shape(store_uri: str) -> None:
    async def check(client: httpx.AsyncClient) -> None:
        r = await client.post("/v1/embeddings", json={"input": "x"})
        assert r.status_code == 500
        assert "failed on purpose" in r.json()["error"]["message"]

    run(create_app(settings(store_uri), model=FakeEmbedder(fail=True)), check)


def test_an_unexpected_error_still_answers_in_the_error_shape(store_uri: str) -> None:
    class BrokenTokenizer(FakeEmbedder):
        def tokenize(self, texts: Any) -> Any:
            raise KeyError("a bug")

    async def main() -> None:
        app = create_app(settings(store_uri), model=BrokenTokenizer())
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                r = await client.post("/v1/embeddings", json={"input": "x"})
        error = assert_openai_error(r, 500)
        assert "KeyError" in error["message"] and error["type"] == "server_error"

    asyncio.run(main())


def test_models_route_lists_the_served_model(store_uri: str) -> None:
    async def check(client: httpx.AsyncClient) -> None:
        data = (await client.get("/v1/models")).json()["data"]
        assert data[0]["id"] == "fake/bag-of-tokens" and data[0]["dim"] == 32

    run(create_app(settings(store_uri), model=FakeEmbedder()), check)


# -- health, metrics, page ------------------------------------------------------------------------


def test_health_readiness_and_metrics(store_uri: str, tmp_path: Path) -> None:
    async def check(client: httpx.AsyncClient) -> None:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ready" and ready["store"]["count"] == len(CORPUS)
        await client.post("/v1/embeddings", json={"input": ["one", "two"]})
        text = (await client.get("/metrics")).text
        assert (
            'vectorstream_requests_total{method="POST",route="/v1/embeddings",status="200"} 1.0'
            in text
        )
        assert "vectorstream_batch_inputs_count 1.0" in text
        assert "vectorstream_tokens_total" in text
        assert "vectorstream_request_duration_seconds_bucket" in text
        assert "vectorstream_queue_depth 0.0" in text

    run(create_app(settings(store_uri), model=FakeEmbedder()), check)

    async def unreachable(client: httpx.AsyncClient) -> None:
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.json()["store"]["ok"] is False

    bad = ServerSettings(store="nosuchscheme://x", collection="docs")
    run(create_app(bad, model=FakeEmbedder()), unreachable)


def test_each_app_has_its_own_metrics_registry(store_uri: str) -> None:
    a = create_app(settings(store_uri), model=FakeEmbedder())
    b = create_app(settings(store_uri), model=FakeEmbedder())
    assert a.state.metrics.registry is not b.state.metrics.registry


def test_the_page_and_its_files_are_served(store_uri: str) -> None:
    async def check(client: httpx.AsyncClient) -> None:
        r = await client.get("/")
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        assert 'id="search-query"' in r.text and 'id="hl-text"' in r.text
        assert (await client.get("/static/style.css")).status_code == 200
        assert_openai_error(await client.get("/nope"), 404)

    run(create_app(settings(store_uri), model=FakeEmbedder()), check)


# -- search ---------------------------------------------------------------------------------------


def test_search_returns_ranked_hits_with_their_fields(store_uri: str) -> None:
    async def check(client: httpx.AsyncClient) -> None:
        r = await client.post("/v1/search", json={"query": "walking on the moon", "k": 3})
        assert r.status_code == 200, r.text
        hits = r.json()["data"]
        assert len(hits) == 3
        assert hits[0]["source"] == "space-moon"
        assert hits[0]["text"] == CORPUS["space-moon"]
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        assert set(hits[0]) >= {"id", "score", "text", "source", "page", "start", "end", "metadata"}
        assert hits[0]["metadata"] == {"topic": "space"}

        r = await client.post(
            "/v1/search", json={"query": "baking", "k": 5, "where": {"metadata.topic": "cooking"}}
        )
        assert {h["source"] for h in r.json()["data"]} == {"cooking-bread", "cooking-soup"}

        r = await client.post(
            "/v1/search", json={"query": "planets", "mode": "range", "beta": 0.0, "k": 5}
        )
        assert len(r.json()["data"]) == 1  # beta 0: only the best
        r = await client.post(
            "/v1/search", json={"query": "planets", "mode": "range", "beta": 2.0, "k": 5}
        )
        assert len(r.json()["data"]) == 5  # cosine scores differ by < 2: everything

        r = await client.post(
            "/v1/search", json={"query": "planets", "mode": "range", "alpha": 1.0}
        )
        assert len(r.json()["data"]) == 1  # alpha 1: weight equal to the best's, so only the best

        r = await client.post("/similar", json={"text": "tomato soup recipe", "num_results": 2})
        assert r.status_code == 200
        assert r.json()["text"][0] == CORPUS["cooking-soup"] and len(r.json()["text"]) == 2

    run(create_app(settings(store_uri), model=real_model()), check)


def test_search_errors(store_uri: str) -> None:
    async def check(client: httpx.AsyncClient) -> None:
        assert_openai_error(await client.post("/v1/search", json={"query": ""}), 422, "query")
        assert_openai_error(await client.post("/v1/search", json={"query": "x", "k": 0}), 422, "k")
        assert_openai_error(
            await client.post("/v1/search", json={"query": "x", "mode": "range"}), 400, "mode"
        )
        assert_openai_error(
            await client.post("/v1/search", json={"query": "x", "where": {"bogus": 1}}), 400
        )
        error = assert_openai_error(
            await client.post("/v1/search", json={"query": "x", "collection": "absent"}),
            404,
            "collection",
        )
        assert error["code"] == "collection_not_found"
        assert_openai_error(await client.post("/similar", json={"num_results": 2}), 422, "text")

    run(create_app(settings(store_uri), model=real_model()), check)


# -- highlights -----------------------------------------------------------------------------------

ARTICLE = (
    "Gardening notes. Tomatoes need full sun and regular watering. "
    "Prune the lower leaves to keep the plants healthy.\n\n"
    "The history of the bicycle begins in 1817 with the running machine. "
    "Pedals were added decades later, and chains after that.\n\n"
    "Sourdough starter is flour and water fermented by wild yeast over several days."
)


def test_highlights_find_the_best_passage_and_cache_repeated_documents(store_uri: str) -> None:
    model = real_model()
    calls: list[int] = []
    original = model.embed_tokenized

    class Counting:
        """The real model, counting the inputs it runs (the seam the batcher calls)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(model, name)

        def embed_tokenized(self, encodings: Any) -> np.ndarray:
            calls.append(len(encodings))
            return original(encodings)

    body = {
        "query": "when was the bicycle invented",
        "documents": [
            {"id": "notes", "text": ARTICLE},
            {"id": "short", "text": "Nothing about wheels here."},
        ],
        "k_per_document": 2,
        "chunking": {"splitter": "sentences", "chunk_tokens": 24, "overlap": 0},
    }

    async def check(client: httpx.AsyncClient) -> None:
        r = await client.post("/v1/highlights", json=body)
        assert r.status_code == 200, r.text
        notes, short = r.json()["data"]
        assert notes["id"] == "notes" and short["id"] == "short"
        best = notes["highlights"][0]
        assert "bicycle" in best["text"]
        assert ARTICLE[best["start"] : best["end"]] == best["text"]
        assert notes["chunks"] > 2 and len(notes["highlights"]) == 2
        assert notes["cached"] is False
        first_inputs = sum(calls)
        assert first_inputs == notes["chunks"] + short["chunks"] + 1  # chunks + the query

        again = dict(body, query="sourdough and yeast")
        r = await client.post("/v1/highlights", json=again)
        notes2 = r.json()["data"][0]
        assert notes2["cached"] is True
        assert "Sourdough" in notes2["highlights"][0]["text"]
        assert sum(calls) - first_inputs == 1  # only the query was embedded

        r = await client.post("/v1/highlights", json=dict(body, max_characters=20))
        assert all(len(h["text"]) <= 20 for h in r.json()["data"][0]["highlights"])
        metrics = (await client.get("/metrics")).text
        assert "vectorstream_highlight_cache_hits_total 4.0" in metrics

    run(create_app(settings(store_uri), model=Counting()), check)


def test_highlights_of_an_uploaded_file(store_uri: str) -> None:
    async def check(client: httpx.AsyncClient) -> None:
        files = {"files": ("notes.md", ARTICLE.encode(), "text/markdown")}
        r = await client.post(
            "/v1/highlights", data={"query": "bicycle history", "k_per_document": "1"}, files=files
        )
        assert r.status_code == 200, r.text
        doc = r.json()["data"][0]
        assert doc["id"] == "notes.md"
        assert "bicycle" in doc["highlights"][0]["text"]
        r = await client.post(
            "/v1/highlights", data={"query": "x"}, files={"other": ("a.txt", b"a")}
        )
        assert_openai_error(r, 400, "files")
        r = await client.post("/v1/highlights", data={"k_per_document": "1"}, files=files)
        assert_openai_error(r, 422, "query")

    run(create_app(settings(store_uri), model=real_model()), check)


def test_large_highlight_jobs_reach_the_model_in_budget_sized_slices(store_uri: str) -> None:
    fake = FakeEmbedder()
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(200))
    body = {"query": "topic 3", "documents": [{"text": text}], "chunking": {"chunk_tokens": 16}}

    async def check(client: httpx.AsyncClient) -> None:
        r = await client.post("/v1/highlights", json=body)
        assert r.status_code == 200, r.text
        chunks = r.json()["data"][0]["chunks"]
        # Each model call holds at most 256 tokens: 16-token chunks (+2 special) make 14 a call.
        assert len(fake.calls) >= chunks // 14
        assert max(fake.calls) <= 14 and sum(fake.calls) == chunks + 1

    run(create_app(settings(store_uri, batch_max_tokens=256), model=fake), check)


def test_highlights_errors(store_uri: str) -> None:
    async def check(client: httpx.AsyncClient) -> None:
        assert_openai_error(
            await client.post("/v1/highlights", json={"query": "x", "documents": []}),
            422,
            "documents",
        )
        assert_openai_error(
            await client.post("/v1/highlights", json={"documents": [{"text": "a"}]}), 422, "query"
        )
        docs = [{"text": "a"}] * 3
        assert_openai_error(
            await client.post("/v1/highlights", json={"query": "x", "documents": docs}),
            400,
            "documents",
        )
        big = [{"text": "a" * 101}]
        assert_openai_error(
            await client.post("/v1/highlights", json={"query": "x", "documents": big}),
            400,
            "documents",
        )
        bad = {
            "query": "x",
            "documents": [{"text": "a"}],
            "chunking": {"chunk_tokens": 16, "overlap": 16},
        }
        assert_openai_error(await client.post("/v1/highlights", json=bad), 400)

    run(
        create_app(
            settings(store_uri, max_documents=2, max_document_chars=100), model=FakeEmbedder()
        ),
        check,
    )


# -- ingest ---------------------------------------------------------------------------------------


async def wait_for_job(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    for _ in range(600):
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["state"] in ("done", "failed"):
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_ingest_files_and_texts_then_search_them(tmp_path: Path) -> None:
    uri = f"lancedb://{tmp_path / 'store'}"

    async def check(client: httpx.AsyncClient) -> None:
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ready" and ready["store"]["count"] == 0  # nothing ingested yet
        files = [
            (
                "files",
                (
                    "../../etc/evil name.md",
                    b"# Volcanoes\n\nLava flows from erupting volcanoes.",
                    "text/markdown",
                ),
            ),
            ("files", ("broken.pdf", b"%PDF-1.7 this is not really a pdf", "application/pdf")),
        ]
        r = await client.post("/v1/ingest", files=files)
        assert r.status_code == 202, r.text
        assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
        job = await wait_for_job(client, r.json()["id"])
        assert job["state"] == "done", job
        assert job["report"]["files_ok"] == 1 and job["report"]["files_failed"] == 1
        assert [e["source"] for e in job["errors"]] == ["broken.pdf"]
        assert job["errors"][0]["stage"] and job["errors"][0]["message"]

        texts = {
            "texts": [
                {
                    "id": "note-1",
                    "text": "Glaciers carve valleys slowly.",
                    "metadata": {"kind": "note"},
                }
            ]
        }
        r = await client.post("/v1/ingest", json=texts)
        assert (await wait_for_job(client, r.json()["id"]))["state"] == "done"

        hits = (
            await client.post("/v1/search", json={"query": "lava from a volcano", "k": 2})
        ).json()["data"]
        assert hits[0]["source"] == "evil name.md"  # only the base name of an upload is kept
        hits = (
            await client.post("/v1/search", json={"query": "ice carving valleys", "k": 1})
        ).json()["data"]
        assert hits[0]["source"] == "note-1"

        assert_openai_error(await client.get("/v1/jobs/job_nope"), 404)
        assert_openai_error(await client.post("/v1/ingest", json={"texts": []}), 422, "texts")
        assert_openai_error(
            await client.post("/v1/ingest", data={"x": "1"}, files={"other": ("a", b"a")}),
            400,
            "files",
        )

    run(create_app(ServerSettings(store=uri, collection="docs"), model=real_model()), check)


def test_the_lean_embeddings_path_answers_like_the_fastapi_route(store_uri: str) -> None:
    import json

    async def check(client: httpx.AsyncClient) -> None:
        body = json.dumps({"input": ["one", "two"], "encoding_format": "base64"})
        lean = await client.post(
            "/v1/embeddings",
            content=body,
            headers={"content-type": "application/json; charset=utf-8"},
        )
        assert lean.status_code == 200 and len(lean.json()["data"]) == 2
        assert lean.headers["content-type"] == "application/json"
        # Validation errors keep FastAPI's 422 shape, located in the body.
        bad = await client.post("/v1/embeddings", json={"inpt": "x"})
        error = assert_openai_error(bad, 422)
        assert error["param"] == "input" and bad.json()["detail"][0]["loc"] == ["body", "input"]
        # A body that is not JSON is left to FastAPI, which refuses it as before.
        other = await client.post(
            "/v1/embeddings", content=body, headers={"content-type": "text/plain"}
        )
        assert_openai_error(other, 422)
        # The route is still documented.
        schema = (await client.get("/openapi.json")).json()
        assert "/v1/embeddings" in schema["paths"]

    run(create_app(settings(store_uri), model=FakeEmbedder()), check)
