"""The service with every model kind: sparse, multivector and image models.

Fakes that follow the kind contract sit at the model seam (``create_app(model=...)``) for the
routes' behaviour; the stores are real LanceDB collections, image collections are written by the
real pipeline. The last tests serve tiny random-weight models of each real kind, loaded through
``--kind`` as ``vectorstream serve`` loads them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest

from _server_support import (
    CORPUS,
    FakeEmbedder,
    FakeImageModel,
    FakeMultivectorModel,
    FakeSparseModel,
    client_for,
    data_uri,
    free_port,
    image_bytes,
)
from vectorstream.errors import ConfigError
from vectorstream.server import ServerSettings, create_app, server_settings_from_env
from vectorstream.types import Embedding, Record

Check = Callable[[httpx.AsyncClient], Coroutine[Any, Any, None]]


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store with one collection per kind, each written with its fake's document embeddings."""
    from vectorstream.stores import open_store

    uri = f"lancedb://{tmp_path_factory.mktemp('kinds-store')}"
    for collection, model in (
        ("dense", FakeEmbedder()),
        ("sparse", FakeSparseModel()),
        ("multivector", FakeMultivectorModel()),
    ):
        kind = getattr(model, "kind", "dense")
        embeddings = model.embed(list(CORPUS.values()))
        records = [
            Record(
                id=f"{source}#0",
                embedding=e if isinstance(e, Embedding) else Embedding(dense=e),
                text=text,
                source=source,
                chunk_index=0,
                start=0,
                end=len(text),
                model=model.model_id,
            )
            for (source, text), e in zip(CORPUS.items(), embeddings, strict=True)
        ]
        store = open_store(uri, collection, dim=model.dim, kind=kind)
        store.upsert(records)
        store.flush()
        store.close()
    return uri


def settings(store_uri: str, collection: str = "dense", **overrides: Any) -> ServerSettings:
    return ServerSettings(store=store_uri, collection=collection, **overrides)


def run(app: Any, check: Check, headers: dict[str, str] | None = None) -> None:
    async def main() -> None:
        async with client_for(app, headers=headers) as client:
            await check(client)

    asyncio.run(main())


def assert_error(
    response: httpx.Response, status: int, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


def sparse_of(item: dict[str, Any]) -> tuple[list[int], list[float], int]:
    e = item["embedding"]
    assert set(e) == {"indices", "values", "dim"}
    return e["indices"], e["values"], e["dim"]


def rows_of(item: dict[str, Any]) -> np.ndarray:
    if isinstance(item["embedding"], str):
        flat = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
        return flat.reshape(item["shape"])
    return np.asarray(item["embedding"], dtype=np.float32)


# -- the setting --------------------------------------------------------------------------------


def test_the_kind_setting_comes_from_the_environment_and_is_checked() -> None:
    assert server_settings_from_env({"VECTORSTREAM_SERVER_KIND": " Sparse "}).kind == "sparse"
    assert server_settings_from_env({}).kind is None  # the model folder says
    with pytest.raises(ConfigError, match="rerank_model"):
        ServerSettings(kind="rerank")  # a reranker is served beside an embedding model
    with pytest.raises(ConfigError, match="dense, sparse, multivector, image"):
        ServerSettings(kind="tfidf")
    with pytest.raises(ConfigError, match="max_image_pixels"):
        ServerSettings(max_image_pixels=0)


def test_serve_passes_the_kind_and_refuses_an_unknown_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import vectorstream.server as server_module
    from vectorstream.cli.main import app

    seen: dict[str, Any] = {}

    def fake_create_app(settings: ServerSettings) -> Any:
        seen["settings"] = settings
        raise ConfigError("stop here")  # serve exits 2 before uvicorn starts

    monkeypatch.setattr(server_module, "create_app", fake_create_app)
    result = CliRunner().invoke(app, ["serve", "--kind", "multivector", "--model", "m"])
    assert result.exit_code == 2, result.output
    assert seen["settings"].kind == "multivector" and seen["settings"].model == "m"
    result = CliRunner().invoke(app, ["serve", "--kind", "tfidf"])
    assert result.exit_code == 2 and "unknown model kind 'tfidf'" in result.output


def test_startup_loads_the_model_of_the_configured_kind(
    store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vectorstream.models

    seen: dict[str, Any] = {}

    def fake_load_model(spec: str, **kwargs: Any) -> Any:
        seen.update(kwargs, spec=spec)
        return FakeSparseModel()

    monkeypatch.setattr(vectorstream.models, "load_model", fake_load_model)

    async def check(client: httpx.AsyncClient) -> None:
        models = (await client.get("/v1/models")).json()["data"]
        assert [(m["id"], m["kind"]) for m in models] == [("fake/sparse", "sparse")]
        ready = (await client.get("/readyz")).json()
        assert ready["model"]["kind"] == "sparse"
        r = await client.post("/v1/embeddings", json={"input": "hello"})
        assert r.status_code == 200 and "indices" in r.json()["data"][0]["embedding"]

    run(create_app(settings(store_uri, "sparse", model="some/splade", kind="sparse")), check)
    assert seen["spec"] == "some/splade" and seen["kind"] == "sparse"


def test_a_reranker_is_refused_as_the_embedding_model(
    store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vectorstream.models

    ranker = SimpleNamespace(kind="rerank", model_id="tiny/ce", dim=1, max_tokens=64)
    monkeypatch.setattr(vectorstream.models, "load_model", lambda spec, **kw: ranker)

    async def check(client: httpx.AsyncClient) -> None:
        raise AssertionError("the service must not start")

    with pytest.raises(ConfigError, match="--rerank-model"):
        run(create_app(settings(store_uri, model="tiny/ce")), check)
    # A model handed in must be of the kind the settings name, when they name one.
    with pytest.raises(ConfigError, match="is a multivector model, not the sparse"):
        run(create_app(settings(store_uri, kind="sparse"), model=FakeMultivectorModel()), check)


# -- /v1/models ---------------------------------------------------------------------------------


def test_models_reports_the_kind_and_the_reranker(store_uri: str) -> None:
    ranker = SimpleNamespace(model_id="tiny/cross-encoder", max_tokens=128)

    async def check_with(client: httpx.AsyncClient) -> None:
        data = (await client.get("/v1/models")).json()["data"]
        assert [(m["id"], m["kind"]) for m in data] == [
            ("fake/colbert", "multivector"),
            ("tiny/cross-encoder", "rerank"),
        ]
        assert data[0]["dim"] == 8 and data[0]["max_tokens"] == 64
        assert data[1]["max_tokens"] == 128

    async def check_dense(client: httpx.AsyncClient) -> None:
        data = (await client.get("/v1/models")).json()["data"]
        assert [(m["id"], m["kind"]) for m in data] == [("fake/bag-of-tokens", "dense")]

    run(create_app(settings(store_uri), model=FakeMultivectorModel(), reranker=ranker), check_with)
    run(create_app(settings(store_uri), model=FakeEmbedder()), check_dense)


# -- sparse -------------------------------------------------------------------------------------


def test_sparse_embeddings_on_the_document_and_query_sides(store_uri: str) -> None:
    served = FakeSparseModel()
    reference = FakeSparseModel()
    texts = ["The cat sat on the mat, the cat.", "Dogs bark at night."]

    async def check(client: httpx.AsyncClient) -> None:
        r = await client.post("/v1/embeddings", json={"input": texts, "model": "fake/sparse"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [d["index"] for d in body["data"]] == [0, 1] and body["model"] == "fake/sparse"
        for item, expected in zip(body["data"], reference.embed(texts), strict=True):
            indices, values, dim = sparse_of(item)
            assert indices == expected.sparse.indices.tolist()
            np.testing.assert_allclose(values, expected.sparse.values)
            assert dim == reference.dim
        tokens = sum(len(e.ids) for e in reference.tokenize(texts))
        assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
        # "the cat" twice: the count shows in the weights.
        cat = reference.tokenizer.token_to_id("cat")
        first = body["data"][0]["embedding"]
        assert first["values"][first["indices"].index(cat)] == 2.0

        r = await client.post("/v1/embeddings", json={"input": texts, "input_type": "query"})
        assert r.status_code == 200, r.text
        for item, expected in zip(r.json()["data"], reference.embed_queries(texts), strict=True):
            indices, values, _ = sparse_of(item)
            assert indices == expected.sparse.indices.tolist()
            np.testing.assert_allclose(values, expected.sparse.values)
            assert FakeSparseModel.QUERY_TERM in indices
        assert served.sides == ["document", "query"]

        r = await client.post("/v1/embeddings", json={"input": texts[0], "input_type": "document"})
        assert r.status_code == 200 and served.sides[-1] == "document"

    run(create_app(settings(store_uri, "sparse"), model=served), check)


def test_sparse_refusals_and_limits(store_uri: str) -> None:
    long_text = " ".join(["word"] * 200)  # over the fake's 64-token document limit

    async def check(client: httpx.AsyncClient) -> None:
        post = client.post
        r = await post("/v1/embeddings", json={"input": "a", "encoding_format": "base64"})
        assert "float" in assert_error(r, 400, param="encoding_format")["message"]
        r = await post("/v1/embeddings", json={"input": "a", "dimensions": 4})
        assert_error(r, 400, param="dimensions")
        r = await post("/v1/embeddings", json={"input": "a", "model": "other/model"})
        assert_error(r, 404, param="model", code="model_not_found")
        r = await post("/v1/embeddings", json={"input": "a", "input_type": "passage"})
        assert_error(r, 422)
        r = await post("/v1/embeddings", json={"input": ["ok", long_text]})
        error = assert_error(r, 400, param="input", code="input_too_long")
        assert "input[1] has 202 tokens" in error["message"]  # special tokens in
        r = await post("/v1/embeddings", json={"input": [long_text], "truncate": True})
        assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]["indices"]) == 1
        assert r.json()["usage"]["prompt_tokens"] == 64
        # Queries are cut to the model's query length, as the reference libraries do.
        r = await post("/v1/embeddings", json={"input": long_text, "input_type": "query"})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] == 16

    run(create_app(settings(store_uri, "sparse"), model=FakeSparseModel()), check)


def test_concurrent_sparse_requests_each_get_their_own_answer(store_uri: str) -> None:
    reference = FakeSparseModel()
    texts = [f"request number {i} about {w}" for i, w in enumerate(["cats", "ships", "rain"] * 4)]

    async def check(client: httpx.AsyncClient) -> None:
        answers = await asyncio.gather(
            *(client.post("/v1/embeddings", json={"input": [t]}) for t in texts)
        )
        for text, r in zip(texts, answers, strict=True):
            assert r.status_code == 200, r.text
            expected = reference.embed([text])[0].sparse
            assert r.json()["data"][0]["embedding"]["indices"] == expected.indices.tolist()

    run(create_app(settings(store_uri, "sparse", lanes=2), model=FakeSparseModel()), check)


def test_highlights_need_a_dense_model(store_uri: str) -> None:
    body = {"query": "cats", "documents": [{"id": "d", "text": "Cats purr. Dogs bark."}]}

    async def check_sparse(client: httpx.AsyncClient) -> None:
        r = await client.post("/v1/highlights", json=body)
        assert "dense" in assert_error(r, 400, code="unsupported_model_kind")["message"]

    async def check_image(client: httpx.AsyncClient) -> None:
        r = await client.post("/v1/highlights", json=body)  # an image model's texts are dense
        assert r.status_code == 200, r.text

    run(create_app(settings(store_uri, "sparse"), model=FakeSparseModel()), check_sparse)
    run(create_app(settings(store_uri), model=FakeImageModel()), check_image)


# -- multivector --------------------------------------------------------------------------------


def test_multivector_embeddings_in_float_and_base64(store_uri: str) -> None:
    served = FakeMultivectorModel()
    reference = FakeMultivectorModel()
    texts = ["late interaction keeps every token", "short"]

    async def check(client: httpx.AsyncClient) -> None:
        expected = [e.multivector for e in reference.embed(texts)]
        r = await client.post("/v1/embeddings", json={"input": texts})
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert [len(d["embedding"]) for d in data] == [len(m) for m in expected]
        for item, rows in zip(data, expected, strict=True):
            assert all(len(row) == 8 for row in item["embedding"])
            np.testing.assert_allclose(rows_of(item), rows, atol=1e-6)

        r = await client.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"})
        assert r.status_code == 200, r.text
        for item, rows in zip(r.json()["data"], expected, strict=True):
            assert isinstance(item["embedding"], str) and item["shape"] == list(rows.shape)
            np.testing.assert_array_equal(rows_of(item), rows)

        r = await client.post("/v1/embeddings", json={"input": texts, "input_type": "query"})
        assert r.status_code == 200, r.text
        queries = [e.multivector for e in reference.embed_queries(texts)]
        for item, rows in zip(r.json()["data"], queries, strict=True):
            assert rows_of(item).shape == (8, 8)  # the query length, expansion rows included
            np.testing.assert_allclose(rows_of(item), rows, atol=1e-6)
        assert served.sides == ["document", "document", "query"]

        r = await client.post("/v1/embeddings", json={"input": texts, "dimensions": 4})
        assert_error(r, 400, param="dimensions")

    run(create_app(settings(store_uri, "multivector"), model=served), check)


def test_a_failing_model_is_a_500_model_error(store_uri: str) -> None:
    class Broken(FakeMultivectorModel):
        def embed_tokenized(self, encodings: Any) -> list[Any]:  # type: ignore[override]
            raise RuntimeError("out of cheese")

    class Wrong(FakeMultivectorModel):
        def embed_tokenized(self, encodings: Any) -> list[Any]:  # type: ignore[override]
            return [Embedding(dense=np.ones(8, np.float32)) for _ in encodings]

    async def check(client: httpx.AsyncClient) -> None:
        r = await client.post("/v1/embeddings", json={"input": "text"})
        assert_error(r, 500, code="model_error")

    run(create_app(settings(store_uri, "multivector"), model=Broken()), check)
    run(create_app(settings(store_uri, "multivector"), model=Wrong()), check)


# -- image models -------------------------------------------------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_an_image_model_embeds_texts_and_images_into_one_answer(store_uri: str) -> None:
    served = FakeImageModel()
    reference = FakeImageModel()
    red = image_bytes(64, 48, (220, 20, 20))
    green = image_bytes(30, 60, (20, 220, 20), "JPEG")
    blue = image_bytes(40, 40, (20, 20, 220), "WEBP")
    grey = image_bytes(33, 21, (128, 128, 128), "GIF")
    inputs = [
        "a red square",
        data_uri(red),
        data_uri(green, "image/jpeg"),
        "a green square",
        data_uri(blue, "image/webp"),
        data_uri(grey, "image/gif").replace("data:image/gif", "DATA:IMAGE/GIF"),
        data_uri(red, "image/jpg"),  # a mislabelled PNG: the bytes decide
    ]

    async def check(client: httpx.AsyncClient) -> None:
        # Texts alone take the dense path (the batcher), exactly as for a dense model.
        r = await client.post("/v1/embeddings", json={"input": ["a red square"]})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(
            r.json()["data"][0]["embedding"], reference.embed(["a red square"])[0], atol=1e-6
        )
        assert served.calls == [1] and served.image_calls == []

        r = await client.post("/v1/embeddings", json={"input": inputs})
        assert r.status_code == 200, r.text
        body = r.json()
        got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
        images = reference.embed_images([red, green, blue, grey, red])
        texts = reference.embed(["a red square", "a green square"])
        expected = np.stack(
            [texts[0], images[0], images[1], texts[1], images[2], images[3], images[4]]
        )
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert [d["index"] for d in body["data"]] == list(range(len(inputs)))
        tokens = sum(len(e.ids) for e in reference.tokenize(["a red square", "a green square"]))
        assert body["usage"]["prompt_tokens"] == tokens  # images count no tokens
        assert served.image_calls == [5]  # one call: well within the pixel budget

        # The dense options apply to images too: base64 rows and Matryoshka-style dimensions.
        r = await client.post(
            "/v1/embeddings",
            json={"input": [data_uri(green, "image/jpeg")], "encoding_format": "base64"},
        )
        row = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
        np.testing.assert_allclose(row, images[1], atol=1e-6)
        r = await client.post("/v1/embeddings", json={"input": [data_uri(red)], "dimensions": 4})
        cut = images[0][:4] / np.linalg.norm(images[0][:4])
        np.testing.assert_allclose(r.json()["data"][0]["embedding"], cut, atol=1e-6)

    run(create_app(settings(store_uri), model=served), check)


def test_the_openai_client_embeds_texts_and_images(store_uri: str) -> None:
    openai = pytest.importorskip("openai")
    red = image_bytes(64, 48, (220, 20, 20))
    reference = FakeImageModel()

    async def check(client: httpx.AsyncClient) -> None:
        api = openai.AsyncOpenAI(
            base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0
        )
        # The client asks for base64 itself and decodes it: the dense shape, images included.
        answer = await api.embeddings.create(
            model="fake/clip", input=["a red square", data_uri(red)]
        )
        got = np.array([d.embedding for d in answer.data], dtype=np.float32)
        expected = np.stack(
            [reference.embed(["a red square"])[0], reference.embed_images([red])[0]]
        )
        np.testing.assert_allclose(got, expected, atol=1e-6)
        with pytest.raises(openai.BadRequestError, match="input\\[0\\]"):
            await api.embeddings.create(model="fake/clip", input=["data:image/png;base64,AAAA"])

    run(create_app(settings(store_uri), model=FakeImageModel()), check)


def test_bad_images_are_400_naming_the_input_never_500(store_uri: str) -> None:
    good = data_uri(image_bytes(20, 20, (1, 2, 3)))
    whole = image_bytes(80, 80, (200, 100, 50))
    bmp = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(bmp, format="BMP")
    cases = [
        ("data:image/png;base64,@@not-base64@@", "invalid_image", "invalid base64"),
        ("data:image/png,rawbytes", "invalid_image", "base64 data URI"),
        ("data:image/png;base64,", "invalid_image", "no image data"),
        (data_uri(bmp.getvalue(), "image/bmp"), "unsupported_image_type", "image/bmp"),
        (data_uri(bmp.getvalue()), "invalid_image", "is not a PNG/JPEG/WEBP/GIF image"),
        (data_uri(b"plain text, not an image"), "invalid_image", "is not a PNG"),
        (data_uri(png_claiming(100_000, 100_000)), "image_too_large", "decompression bomb"),
        (data_uri(png_claiming(5_000, 5_000)), "image_too_large", "5000x5000"),
        (data_uri(whole[: len(whole) // 2]), "invalid_image", "cannot be decoded"),
    ]

    async def check(client: httpx.AsyncClient) -> None:
        for bad, code, words in cases:
            r = await client.post("/v1/embeddings", json={"input": ["a text", good, bad]})
            error = assert_error(r, 400, param="input", code=code)
            assert error["message"].startswith("input[2]") and words in error["message"], error
        # Over the service's own bound (set low here), a real image is refused before decoding.
        big = data_uri(image_bytes(300, 300, (9, 9, 9)))
        r = await client.post("/v1/embeddings", json={"input": [big]})
        assert (
            "more than the limit of 50,000"
            in assert_error(r, 400, code="image_too_large")["message"]
        )
        # And the service still answers.
        r = await client.post("/v1/embeddings", json={"input": [good]})
        assert r.status_code == 200, r.text

    run(create_app(settings(store_uri, max_image_pixels=50_000), model=FakeImageModel()), check)


def test_images_are_decoded_a_pixel_budget_at_a_time(store_uri: str) -> None:
    served = FakeImageModel()
    pictures = [image_bytes(64, 64, (i * 40, 10, 10)) for i in range(5)]

    async def check(client: httpx.AsyncClient) -> None:
        r = await client.post("/v1/embeddings", json={"input": [data_uri(p) for p in pictures]})
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
        np.testing.assert_allclose(got, FakeImageModel().embed_images(pictures), atol=1e-6)
        assert served.image_calls == [2, 2, 1]  # at most 2 x 64 x 64 pixels at once

    run(create_app(settings(store_uri, max_image_pixels=2 * 64 * 64), model=served), check)


# -- search -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make", [FakeSparseModel, FakeMultivectorModel], ids=["sparse", "multivector"]
)
def test_search_embeds_the_query_side_and_searches_the_kind(
    store_uri: str, make: Callable[[], Any]
) -> None:
    from vectorstream.search import search
    from vectorstream.stores import open_store

    served = make()
    kind = served.kind
    query = "the planet rovers explored"
    local = open_store(store_uri, kind, mode="r")
    try:
        expected = search(query, store=local, model=make(), k=3)
    finally:
        local.close()
    assert expected[0].source == "space-mars"

    async def check(client: httpx.AsyncClient) -> None:
        r = await client.post("/v1/search", json={"query": query, "k": 3})
        assert r.status_code == 200, r.text
        hits = r.json()["data"]
        assert [h["id"] for h in hits] == [h.id for h in expected]
        np.testing.assert_allclose([h["score"] for h in hits], [h.score for h in expected], 1e-5)
        assert served.sides == ["query"]
        r = await client.post("/similar", json={"text": query, "num_results": 1})
        assert r.json() == {"text": [CORPUS["space-mars"]]}
        # A collection of another kind: the library's refusal, as a 400.
        r = await client.post("/v1/search", json={"query": query, "collection": "dense"})
        assert "dense" in assert_error(r, 400)["message"]

    run(create_app(settings(store_uri, kind), model=served), check)


@pytest.fixture(scope="module")
def image_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Images and a text file ingested by the real pipeline with the image fake, plus a text
    whose id is the absolute path of an image that was never ingested."""
    from vectorstream import ingest
    from vectorstream.types import Source

    root = tmp_path_factory.mktemp("image-corpus")
    files = root / "files"
    files.mkdir()
    paths = {
        "red": files / "red.png",
        "wide": files / "wide.jpg",
        "notes": files / "notes.txt",
        "changed": files / "changed.png",
        "secret": files / "secret.png",  # on disk, never ingested as itself
    }
    paths["red"].write_bytes(image_bytes(64, 48, (220, 20, 20)))
    paths["wide"].write_bytes(image_bytes(600, 300, (20, 180, 40), "JPEG"))
    paths["notes"].write_text("A note about a red square and a wide green picture.")
    paths["changed"].write_bytes(image_bytes(50, 50, (10, 10, 200)))
    paths["secret"].write_bytes(image_bytes(70, 70, (250, 250, 0)))
    uri = f"lancedb://{root / 'db'}"
    sources = [str(paths[k]) for k in ("red", "wide", "notes", "changed")]
    crafted = Source(uri=str(paths["secret"]), text="a text that claims a file's name")
    report = ingest(
        [*sources, crafted], model=FakeImageModel(), store=uri, collection="pics", workers=0
    )
    assert report.files_ok == 5, report
    paths["changed"].write_bytes(image_bytes(50, 50, (200, 10, 10)))  # edited after ingest
    return {"uri": uri, "paths": paths}


def test_search_returns_image_hits_with_their_source_and_metadata(
    image_corpus: dict[str, Any],
) -> None:
    paths = image_corpus["paths"]

    async def check(client: httpx.AsyncClient) -> None:
        r = await client.post("/v1/search", json={"query": "a red square", "k": 10})
        assert r.status_code == 200, r.text
        hits = {h["source"]: h for h in r.json()["data"]}
        assert set(hits) == {str(p) for p in paths.values()}
        red = hits[str(paths["red"])]
        assert red["text"] == ""
        assert red["metadata"]["media_type"] == "image/png"
        assert (red["metadata"]["width"], red["metadata"]["height"]) == (64, 48)
        assert hits[str(paths["wide"])]["metadata"]["media_type"] == "image/jpeg"
        assert hits[str(paths["notes"])]["text"].startswith("A note")

    app = create_app(
        ServerSettings(store=image_corpus["uri"], collection="pics"), model=FakeImageModel()
    )
    run(app, check)


def test_thumbnails_only_of_images_the_store_ingested(image_corpus: dict[str, Any]) -> None:
    from PIL import Image

    paths = image_corpus["paths"]
    elsewhere = paths["red"].parent.parent / "elsewhere.png"
    shutil.copyfile(paths["red"], elsewhere)  # the same bytes, under a path never ingested

    async def thumb(client: httpx.AsyncClient, source: str, **params: str) -> httpx.Response:
        return await client.get("/v1/sources/thumbnail", params={"source": source, **params})

    async def check(client: httpx.AsyncClient) -> None:
        r = await thumb(client, str(paths["wide"]))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/jpeg"
        assert r.headers["x-content-type-options"] == "nosniff"
        with Image.open(io.BytesIO(r.content)) as image:
            assert image.format == "JPEG" and image.size == (256, 128)
        r = await thumb(client, str(paths["red"]), collection="pics")
        assert r.status_code == 200
        with Image.open(io.BytesIO(r.content)) as image:
            assert image.size == (64, 48)  # never enlarged
            pixel = image.convert("RGB").getpixel((60, 5))
            assert isinstance(pixel, tuple) and pixel[0] > 180  # the red survives

        refused = [
            "red.png",  # a relative name (uploads are stored so) is never resolved
            str(elsewhere),  # not a source of the collection
            str(paths["secret"]),  # a text's id names it: its hash is the text's, not the file's
            str(paths["changed"]),  # the bytes on disk are not those ingested
            str(paths["notes"]),  # ingested, but not an image
            str(paths["red"].parent / "missing.png"),
            "/etc/passwd",
        ]
        for source in refused:
            r = await thumb(client, source)
            assert_error(r, 404, param="source", code="thumbnail_not_found")
        r = await client.get("/v1/sources/thumbnail")
        assert_error(r, 422)

    app = create_app(
        ServerSettings(store=image_corpus["uri"], collection="pics"), model=FakeImageModel()
    )
    run(app, check)

    async def check_key(client: httpx.AsyncClient) -> None:
        r = await thumb(client, str(paths["wide"]))
        assert_error(r, 401)

    app = create_app(
        ServerSettings(store=image_corpus["uri"], collection="pics", api_key="k"),
        model=FakeImageModel(),
    )
    run(app, check_key)


CHROMIUM = "/usr/bin/chromium"


@contextlib.contextmanager
def uvicorn_thread(app: Any) -> Iterator[str]:
    """``app`` on a free loopback port, served by uvicorn in a thread of this process."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent")
def test_the_page_shows_image_hits_with_thumbnails(image_corpus: dict[str, Any]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    paths = image_corpus["paths"]
    app = create_app(
        ServerSettings(store=image_corpus["uri"], collection="pics", api_key="page-key"),
        model=FakeImageModel(),
    )
    with uvicorn_thread(app) as base, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox"], headless=True
        )
        try:
            page = browser.new_page()
            page.goto(base + "/")
            # The thumbnail route needs the key like every /v1 route: the page sends it.
            page.fill("#api-key", "page-key")
            page.dispatch_event("#api-key", "change")
            page.fill("#search-query", "a wide green picture")
            page.fill("#search-k", "10")
            page.click("#search-form button")
            page.wait_for_selector("#search-status:has-text('results')")
            names = page.locator(".image-name").all_inner_texts()
            # The text whose id names secret.png is a text hit, not an image one.
            assert sorted(names) == ["changed.png", "red.png", "wide.jpg"], names
            # Thumbnails load for the images ingested as they are on disk; the edited one shows
            # its name and metadata only.
            page.wait_for_function("document.querySelectorAll('img.thumb').length === 2")
            widths = page.eval_on_selector_all(
                "img.thumb", "els => els.map(e => [e.alt, e.naturalWidth, e.naturalHeight])"
            )
            assert sorted(widths) == [["red.png", 64, 48], ["wide.jpg", 256, 128]], widths
            wide = page.locator("li.hit.image", has_text="wide.jpg")
            assert "image/jpeg · 600×300" in wide.inner_text()
            assert str(paths["wide"]) in wide.locator(".source").inner_text()
            text_hit = page.locator("li.hit:not(.image)", has_text="A note about")
            assert text_hit.count() == 1
        finally:
            browser.close()


# -- the real kinds, tiny random weights --------------------------------------------------------


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kinds-cache")


def _serve_real(
    store_uri: str,
    collection: str,
    folder: Path,
    kind: str,
    cache: Path,
    check: Callable[[httpx.AsyncClient, Any], Coroutine[Any, Any, None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VECTORSTREAM_CACHE_DIR", str(cache))
    # Automatic lanes: on a multi-core machine the model is loaded once per lane's threads, and
    # the all-core twin that dense models get for lone requests is skipped for the other kinds.
    app = create_app(settings(store_uri, collection, model=str(folder), kind=kind))

    async def main() -> None:
        async with client_for(app) as client:
            await check(client, app.state.service.model)

    asyncio.run(main())


def test_a_real_sparse_model(
    store_uri: str, tmp_path: Path, real_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    from transformers import BertConfig, BertForMaskedLM

    from _colbert_support import minilm_folder

    # A plain masked-LM folder: nothing in it says "sparse", so only --kind makes it one.
    minilm = minilm_folder()
    folder = tmp_path / "splade"
    vocab = json.loads((minilm / "config.json").read_text())["vocab_size"]
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=vocab,
        initializer_range=0.2,
    )
    BertForMaskedLM(config).eval().save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(minilm / name, folder / name)
    texts = ["Sparse vectors weigh vocabulary terms.", "A second, different input."]

    async def check(client: httpx.AsyncClient, model: Any) -> None:
        assert model.kind == "sparse"
        r = await client.post("/v1/embeddings", json={"input": texts})
        assert r.status_code == 200, r.text
        for item, expected in zip(r.json()["data"], model.embed(texts), strict=True):
            indices, values, dim = sparse_of(item)
            assert indices == expected.sparse.indices.tolist() and dim == model.dim
            np.testing.assert_allclose(values, expected.sparse.values, rtol=1e-5)
        r = await client.post("/v1/embeddings", json={"input": texts, "input_type": "query"})
        for item, expected in zip(r.json()["data"], model.embed_queries(texts), strict=True):
            assert sparse_of(item)[0] == expected.sparse.indices.tolist()

    _serve_real(store_uri, "sparse", folder, "sparse", real_cache, check, monkeypatch)


def test_a_real_multivector_model(
    store_uri: str, tmp_path: Path, real_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    from _colbert_support import st_colbert, tiny_base

    folder = st_colbert(tiny_base(tmp_path / "base"), tmp_path / "colbert", query_length=12)
    texts = ["Late interaction scores every token.", "short one"]

    async def check(client: httpx.AsyncClient, model: Any) -> None:
        assert model.kind == "multivector"
        r = await client.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"})
        assert r.status_code == 200, r.text
        for item, expected in zip(r.json()["data"], model.embed(texts), strict=True):
            np.testing.assert_allclose(rows_of(item), expected.multivector, atol=1e-5)
        r = await client.post("/v1/embeddings", json={"input": texts, "input_type": "query"})
        for item, expected in zip(r.json()["data"], model.embed_queries(texts), strict=True):
            assert rows_of(item).shape == expected.multivector.shape
            np.testing.assert_allclose(rows_of(item), expected.multivector, atol=1e-5)

    _serve_real(store_uri, "multivector", folder, "multivector", real_cache, check, monkeypatch)


def test_a_real_image_model(
    store_uri: str, tmp_path: Path, real_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    from _clip_support import build_tiny_clip

    folder = build_tiny_clip(tmp_path / "clip")
    picture = image_bytes(320, 200, (30, 90, 200), "JPEG")

    async def check(client: httpx.AsyncClient, model: Any) -> None:
        assert model.kind == "image"
        inputs = ["a photo of a harbour", data_uri(picture, "image/jpeg")]
        r = await client.post("/v1/embeddings", json={"input": inputs})
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
        np.testing.assert_allclose(got[0], model.embed([inputs[0]])[0], atol=1e-5)
        np.testing.assert_allclose(got[1], model.embed_images([picture])[0], atol=1e-5)
        r = await client.post("/v1/embeddings", json={"input": [data_uri(b"GIF89a broken")]})
        assert_error(r, 400, param="input", code="invalid_image")

    _serve_real(store_uri, "dense", folder, "image", real_cache, check, monkeypatch)
