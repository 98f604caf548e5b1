"""A real uvicorn subprocess started by ``vectorstream serve``, driven by the official OpenAI client."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from _server_support import CORPUS, MODEL_DIR, build_store, real_model, serve_subprocess

KEY = "test-key-123"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("uvicorn-store")
    uri = f"lancedb://{folder}"
    build_store(uri, "docs", real_model(), CORPUS)
    args = [
        "--model",
        str(MODEL_DIR),
        "--store",
        uri,
        "--collection",
        "docs",
        "--api-key",
        KEY,
        "--log-level",
        "warning",
    ]
    with serve_subprocess(args) as base:
        yield base


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def as_rows(data: list[Any]) -> np.ndarray:
    # Asked for base64 explicitly, the client hands the string over; left to itself it asks for
    # base64 and decodes the little-endian float32 bytes with numpy.
    return np.array(
        [
            np.frombuffer(base64.b64decode(d.embedding), "<f4")
            if isinstance(d.embedding, str)
            else d.embedding
            for d in data
        ],
        dtype=np.float32,
    )


@pytest.mark.parametrize("encoding_format", ["float", "base64", None])
def test_openai_client_gets_the_library_vectors(server: str, encoding_format: str | None) -> None:
    texts = [
        "The quick brown fox jumps over the lazy dog.",
        "Embeddings over HTTP",
        "ünïcödé text ✓",
    ]
    expected = real_model().embed(texts)
    with openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0) as client:
        extra: dict[str, Any] = (
            {} if encoding_format is None else {"encoding_format": encoding_format}
        )
        response = client.embeddings.create(model=real_model().model_id, input=texts, **extra)
    if encoding_format == "base64":
        assert isinstance(response.data[0].embedding, str)
    got = as_rows(response.data)
    assert got.shape == expected.shape
    assert cosines(got, expected).min() >= 0.9999
    assert response.usage.prompt_tokens == sum(len(e.ids) for e in real_model().tokenize(texts))


def test_openai_client_with_one_string_and_dimensions(server: str) -> None:
    with openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0) as client:
        response = client.embeddings.create(
            model=real_model().model_id, input="one text", dimensions=128
        )
    assert len(response.data) == 1 and len(response.data[0].embedding) == 128


def test_openai_client_sees_our_errors_as_its_own(server: str) -> None:
    with (
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.embeddings.create(model="m", input="x")
    with openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0) as client:
        with pytest.raises(openai.NotFoundError, match="not served here"):
            client.embeddings.create(model="text-embedding-3-large", input="x")
        with pytest.raises(openai.BadRequestError, match="tokens"):
            client.embeddings.create(model=real_model().model_id, input="many words " * 300)


def test_search_and_probes_over_real_http(server: str) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server, timeout=30) as client:
        assert client.get("/readyz").json()["status"] == "ready"
        hits = client.post(
            "/v1/search", json={"query": "red planet rovers", "k": 2}, headers=headers
        ).json()["data"]
        assert hits[0]["source"] == "space-mars"
        assert client.post("/similar", json={"text": "x"}).status_code == 401
        metrics = client.get("/metrics", headers=headers).text
        assert "vectorstream_batch_inputs_bucket" in metrics
