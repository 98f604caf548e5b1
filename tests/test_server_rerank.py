"""``POST /v1/rerank`` in process (httpx ASGITransport, lifespan run by asgi-lifespan) with a tiny
random-weight cross-encoder saved by sentence-transformers, compared with ``CrossEncoder.rank``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from _rerank_support import cross_encoder, save_cross_encoder, save_plain
from _server_support import FakeEmbedder, client_for
from vectorstream.errors import ConfigError
from vectorstream.models._rerank import load_rerank
from vectorstream.models._rerank_model import Reranker
from vectorstream.server import ServerSettings, create_app

Check = Callable[[httpx.AsyncClient], Coroutine[Any, Any, None]]

QUERY = "when does the night train leave the harbour"
DOCUMENTS = [
    "The night train leaves the harbour station at ten past eleven.",
    "A tomato soup needs ripe tomatoes, onions and garlic.",
    "Harbour budget report for the quarter, with the council's notes.",
    "train " * 300,  # over the model's 128 tokens: truncated, as CrossEncoder does
    "Lighthouse keepers kept logs of every ship.",
    "",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_cross_encoder(tmp_path_factory.mktemp("rerank-server") / "tiny-ce", seed=11)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rerank-cache")


@pytest.fixture(scope="module")
def reranker(folder: Path, cache: Path) -> Reranker:
    return load_rerank(folder, "tiny/ce", backend="onnx", cache=cache)


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"lancedb://{tmp_path_factory.mktemp('rerank-store')}"


def settings(store_uri: str, **overrides: Any) -> ServerSettings:
    return ServerSettings(store=store_uri, collection="docs", **overrides)


def run(app: Any, check: Check) -> None:
    async def main() -> None:
        async with client_for(app) as client:
            await check(client)

    asyncio.run(main())


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    return dict(error)


def test_rerank_answers_as_cross_encoder_ranks(store_uri: str, reranker: Reranker) -> None:
    reference = cross_encoder(reranker.path).rank(QUERY, DOCUMENTS)
    tokens = sum(
        sum(e.attention_mask) for e in reranker.tokenize_pairs([(QUERY, d) for d in DOCUMENTS])
    )

    async def check(client: httpx.AsyncClient) -> None:
        documents: list[Any] = [
            d if i % 2 else {"text": d, "title": "ignored"} for i, d in enumerate(DOCUMENTS)
        ]
        r = await client.post("/v1/rerank", json={"query": QUERY, "documents": documents})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "tiny/ce"
        assert body["usage"] == {"total_tokens": tokens}
        results = body["results"]
        assert [x["index"] for x in results] == [int(x["corpus_id"]) for x in reference]
        np.testing.assert_allclose(
            [x["relevance_score"] for x in results],
            [float(x["score"]) for x in reference],
            rtol=0,
            atol=1e-4,
        )
        assert all(x["document"] == {"text": DOCUMENTS[x["index"]]} for x in results)
        scores = [x["relevance_score"] for x in results]
        assert scores == sorted(scores, reverse=True)

        r = await client.post(
            "/v1/rerank",
            json={
                "model": "tiny/ce",
                "query": QUERY,
                "documents": DOCUMENTS,
                "top_n": 2,
                "return_documents": False,
            },
        )
        assert r.status_code == 200, r.text
        top = r.json()["results"]
        assert [x["index"] for x in top] == [x["index"] for x in results[:2]]
        assert all(set(x) == {"index", "relevance_score"} for x in top)

        # top_n above the number of documents returns them all.
        r = await client.post(
            "/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS[:3], "top_n": 10}
        )
        assert len(r.json()["results"]) == 3

    run(create_app(settings(store_uri), model=FakeEmbedder(), reranker=reranker), check)


def test_bad_requests_answer_400_in_the_error_shape(store_uri: str, reranker: Reranker) -> None:
    async def check(client: httpx.AsyncClient) -> None:
        async def post(body: dict[str, Any]) -> httpx.Response:
            return await client.post("/v1/rerank", json=body)

        assert_error(await post({"query": "  ", "documents": ["a"]}), 400, "query")
        assert_error(await post({"query": "q", "documents": []}), 400, "documents")
        assert_error(await post({"query": "q", "documents": ["a"], "top_n": 0}), 400, "top_n")
        assert_error(await post({"query": "q", "documents": ["a"] * 4}), 400, "documents")
        assert_error(await post({"query": "q", "documents": ["x" * 101]}), 400, "documents")
        error = assert_error(await post({"query": "q", "documents": ["a"], "model": "other"}), 404)
        assert error["code"] == "model_not_found"
        # Wrong types are malformed bodies: 422, as on every route.
        assert_error(await post({"query": "q", "documents": [{"txt": "a"}]}), 422)
        assert_error(await post({"documents": ["a"]}), 422)

    app = create_app(
        settings(store_uri, max_rerank_documents=3, max_document_chars=100),
        model=FakeEmbedder(),
        reranker=reranker,
    )
    run(app, check)


def test_without_a_reranker_the_route_says_how_to_get_one(store_uri: str) -> None:
    async def check(client: httpx.AsyncClient) -> None:
        r = await client.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
        error = assert_error(r, 404)
        assert error["code"] == "reranker_not_loaded" and "--rerank-model" in error["message"]
        # The rest of the service is unaffected.
        r = await client.post("/v1/embeddings", json={"input": ["hello"]})
        assert r.status_code == 200

    run(create_app(settings(store_uri), model=FakeEmbedder()), check)


def test_rerank_model_setting_loads_the_folder_at_startup(
    store_uri: str, folder: Path, cache: Path, reranker: Reranker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VECTORSTREAM_CACHE_DIR", str(cache))
    expected = reranker.score([(QUERY, d) for d in DOCUMENTS])

    async def check(client: httpx.AsyncClient) -> None:
        # Concurrent requests run one after another off the event loop; each gets its own answer.
        bodies = [{"query": QUERY, "documents": DOCUMENTS[i:]} for i in range(4)]
        answers = await asyncio.gather(*(client.post("/v1/rerank", json=b) for b in bodies))
        for start, r in enumerate(answers):
            assert r.status_code == 200, r.text
            got = {x["index"] + start: x["relevance_score"] for x in r.json()["results"]}
            for i, score in got.items():
                assert abs(score - float(expected[i])) <= 1e-4
        # The model may be named by the spec the service was started with.
        r = await client.post(
            "/v1/rerank", json={"model": str(folder), "query": QUERY, "documents": ["a"]}
        )
        assert r.status_code == 200, r.text

    app = create_app(settings(store_uri, rerank_model=str(folder)), model=FakeEmbedder())
    run(app, check)


def test_a_multi_label_model_is_refused_as_the_reranker(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vectorstream.server.routes.rerank import load_reranker

    monkeypatch.setenv("VECTORSTREAM_CACHE_DIR", str(cache))
    multi = save_plain(tmp_path / "three-labels", num_labels=3, max_positions=64, seed=2)
    with pytest.raises(ConfigError, match="3 labels"):
        load_reranker(ServerSettings(rerank_model=str(multi), backend="torch"))


def test_cli_passes_the_rerank_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import vectorstream.server as server_module
    from vectorstream.cli.main import app

    seen: dict[str, Any] = {}

    def fake_create_app(settings: ServerSettings) -> Any:
        seen["settings"] = settings
        raise ConfigError("stop here")  # serve exits 2 before uvicorn starts

    monkeypatch.setattr(server_module, "create_app", fake_create_app)
    result = CliRunner().invoke(app, ["serve", "--rerank-model", "some/cross-encoder"])
    assert result.exit_code == 2, result.output
    assert seen["settings"].rerank_model == "some/cross-encoder"
