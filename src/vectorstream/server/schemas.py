"""Request bodies, validated by pydantic (a body that does not fit answers 422)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    # Unknown fields are ignored, as OpenAI's API does: clients send extras such as "user".
    model_config = ConfigDict(extra="ignore")


class EmbeddingsRequest(_Body):
    input: str | list[str] = Field(description="A text, or a list of texts")
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None
    # Not in OpenAI's API: cut over-long inputs to the model's limit instead of answering 400.
    truncate: bool | None = None
    # Not in OpenAI's API: the side a sparse or multivector model embeds inputs as (query markers,
    # query expansion); None is "document". Dense and image models embed both sides alike.
    input_type: Literal["query", "document"] | None = None


class ChunkingBody(_Body):
    splitter: Literal["markdown", "tokens", "sentences", "semantic"] = "sentences"
    chunk_tokens: int = Field(default=128, ge=8, le=8192)
    overlap: int = Field(default=0, ge=0, le=4096)


class SearchRequest(_Body):
    query: str = Field(min_length=1)
    k: int = Field(default=10, ge=1, le=1000)
    collection: str | None = None
    where: dict[str, Any] | None = None
    mode: Literal["topk", "range"] = "topk"
    beta: float | None = Field(default=None, ge=0)
    alpha: float | None = Field(default=None, gt=0, le=1)


class SimilarRequest(_Body):
    text: str = Field(min_length=1)
    num_results: int = Field(default=10, ge=1, le=1000)


class HighlightDocumentBody(_Body):
    id: str | None = None
    text: str


class HighlightsRequest(_Body):
    query: str = Field(min_length=1)
    documents: list[HighlightDocumentBody] = Field(min_length=1)
    k_per_document: int = Field(default=3, ge=1, le=100)
    max_characters: int | None = Field(default=None, ge=1)
    chunking: ChunkingBody | None = None


class IngestText(_Body):
    id: str | None = None
    text: str
    metadata: dict[str, Any] | None = None


class IngestRequest(_Body):
    texts: list[IngestText] = Field(min_length=1)
    collection: str | None = None


class RerankDocument(_Body):
    text: str


class RerankRequest(_Body):
    # The shape Cohere, Jina and TEI's Cohere-style route share; limits are checked by the route
    # (400, not 422: an empty query is a bad request, not a malformed one).
    query: str
    documents: list[str | RerankDocument]
    model: str | None = None
    top_n: int | None = None
    return_documents: bool = True


__all__ = [
    "ChunkingBody",
    "EmbeddingsRequest",
    "HighlightDocumentBody",
    "HighlightsRequest",
    "IngestRequest",
    "IngestText",
    "RerankDocument",
    "RerankRequest",
    "SearchRequest",
    "SimilarRequest",
]
