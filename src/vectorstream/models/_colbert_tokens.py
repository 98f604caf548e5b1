"""ColBERT tokenisation: the query/document marker, [MASK] query expansion and the skiplist.

PyLate and Stanford ColBERT insert the marker (a token of the tokenizer) right after the first
special token; it goes into the tokenizer's post-processor here, so truncation leaves room for it.
Queries are padded with the expansion token (normally [MASK]) up to the query length; documents
drop the vectors of skiplist tokens (punctuation, for PyLate and Stanford).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from ..errors import ConfigError, ModelError
from ._colbert_folder import ColbertFolder, QueryExpansion, peek_json, read_json

log = logging.getLogger("vectorstream.models.multivector")


def load_tokenizer_json(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a tokenizer.json")
    return data


def tokenizer_from(data: dict[str, Any], source: Path) -> tokenizers.Tokenizer:
    try:
        tok = tokenizers.Tokenizer.from_str(json.dumps(data))
    except Exception as exc:  # tokenizers raises a bare Exception for bad files
        raise ModelError(f"cannot load tokenizer {source}: {exc}") from exc
    tok.no_padding()
    tok.no_truncation()
    return tok


_MARKER_KEY = "vectorstream:marker"


def _special(key: str, type_id: int = 0) -> dict[str, Any]:
    return {"SpecialToken": {"id": key, "type_id": type_id}}


def _sequence(name: str, type_id: int) -> dict[str, Any]:
    return {"Sequence": {"id": name, "type_id": type_id}}


def _with_marker(processor: Any, marker: str, marker_id: int) -> dict[str, Any]:
    """The post-processor with ``marker`` inserted right after the first special token, where
    PyLate and Stanford ColBERT insert it (so truncation leaves room for it, as theirs does)."""
    kind = processor.get("type") if isinstance(processor, dict) else None
    if kind == "Sequence":
        parts = list(processor.get("processors") or [])
        for i, part in enumerate(parts):
            if isinstance(part, dict) and part.get("type") in (
                "TemplateProcessing",
                "BertProcessing",
                "RobertaProcessing",
            ):
                parts[i] = _with_marker(part, marker, marker_id)
                return {**processor, "processors": parts}
    elif kind in ("BertProcessing", "RobertaProcessing"):
        (cls, cls_id), (sep, sep_id) = processor["cls"], processor["sep"]
        single = [_special(cls), _sequence("A", 0), _special(sep)]
        if kind == "BertProcessing":
            pair = [*single, _sequence("B", 1), _special(sep, 1)]
        else:
            pair = [*single, _special(sep), _sequence("B", 0), _special(sep)]
        template = {
            "type": "TemplateProcessing",
            "single": single,
            "pair": pair,
            "special_tokens": {
                cls: {"id": cls, "ids": [cls_id], "tokens": [cls]},
                sep: {"id": sep, "ids": [sep_id], "tokens": [sep]},
            },
        }
        return _with_marker(template, marker, marker_id)
    elif kind == "TemplateProcessing":
        out = dict(processor)
        for name in ("single", "pair"):
            items = list(processor.get(name) or [])
            if name == "pair" and not items:
                continue
            if not items or "SpecialToken" not in items[0]:
                raise ModelError(
                    "the tokenizer adds no leading special token, so there is nowhere to insert "
                    f"the marker {marker!r}"
                )
            type_id = items[0]["SpecialToken"].get("type_id", 0)
            out[name] = [items[0], _special(_MARKER_KEY, type_id), *items[1:]]
        out["special_tokens"] = {
            **processor.get("special_tokens", {}),
            _MARKER_KEY: {"id": _MARKER_KEY, "ids": [marker_id], "tokens": [marker]},
        }
        return out
    raise ModelError(
        f"cannot insert the marker {marker!r}: unsupported tokenizer post-processor {kind!r}"
    )


def _token_id(tok: tokenizers.Tokenizer, token: str) -> int | None:
    """The id of ``token`` as one piece (vocabulary or added token), as the references look it up."""
    found = tok.token_to_id(token)
    return int(found) if found is not None else None


def named_token(transformer_path: Path, name: str) -> str | None:
    """A special token named in tokenizer_config.json / special_tokens_map.json (e.g. mask_token)."""
    for file in ("tokenizer_config.json", "special_tokens_map.json"):
        value = (peek_json(transformer_path / file) or {}).get(name)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value:
            return value
    return None


@dataclass(frozen=True, slots=True, eq=False)
class Side:
    """How one side (queries or documents) is tokenised and which token vectors it keeps."""

    name: str
    tokenizer: tokenizers.Tokenizer  # marker in its post-processor, truncating at max_length
    prompt: str
    strip: bool
    lower: bool
    max_length: int
    expansion: QueryExpansion | None
    expansion_id: int | None
    scores_expansion: bool
    skip_ids: np.ndarray | None
    keep_only_ids: np.ndarray | None

    @property
    def floor(self) -> int:
        return self.expansion.length if self.expansion is not None else 0

    def prepare(self, text: str) -> str:
        if self.strip:
            text = text.strip()
        text = self.prompt + text
        return text.lower() if self.lower else text


def edges_matter(tok: tokenizers.Tokenizer) -> bool:
    """Whether whitespace around a text changes its tokens (SentencePiece, byte-level BPE)."""
    for core in ("hello world", "x"):
        plain = tok.encode(core).ids
        for padded in (f" {core}", f"{core} ", f"\n\t{core}  \n"):
            if tok.encode(padded).ids != plain:
                return True
    return False


def _expansion_id(folder: ColbertFolder, tok: tokenizers.Tokenizer) -> int:
    expansion = folder.expansion
    assert expansion is not None
    if expansion.token is not None:
        found = _token_id(tok, expansion.token)
        if found is None:
            raise ModelError(f"query expansion token {expansion.token!r} is not in the tokenizer")
        return found
    # The references' chain: the mask token (encoders), else end-of-sequence (decoders), else pad.
    for name, fallbacks in (
        ("mask_token", ("[MASK]", "<mask>")),
        ("eos_token", ()),
        ("pad_token", ("[PAD]", "<pad>")),
    ):
        for token in (named_token(folder.transformer_path, name), *fallbacks):
            if token is not None and (found := _token_id(tok, token)) is not None:
                return found
    raise ModelError(f"{folder.path}: the tokenizer has no [MASK] token to expand queries with")


def _skip_ids(folder: ColbertFolder, tok: tokenizers.Tokenizer) -> np.ndarray | None:
    if not folder.skiplist_words:
        return None
    ids: list[int] = []
    missing: list[str] = []
    for word in folder.skiplist_words:
        # Words that are not one token are left out, as sentence-transformers does (PyLate would
        # look them up as [UNK] and so drop every unknown token of a document).
        found = _token_id(tok, word)
        if found is None:
            missing.append(word)
        else:
            ids.append(found)
    if missing:
        log.debug("skiplist words that are not single tokens, ignored: %s", missing)
    return np.asarray(sorted(set(ids)), dtype=np.int64) if ids else None


def make_side(
    folder: ColbertFolder,
    data: dict[str, Any],
    *,
    query: bool,
    strip: bool,
    max_length: int,
) -> Side:
    name = "query" if query else "document"
    marker = folder.query_marker if query else folder.document_marker
    prompt = folder.query_prompt if query else folder.document_prompt
    base = tokenizer_from(data, folder.tokenizer_path)
    if marker is not None:
        # PyLate saves the marker with its trailing space ("[Q] "); Stanford uses a vocabulary
        # token ("[unused0]"). A folder whose tokenizer lacks it gets it as text, as
        # sentence-transformers does.
        marker_id = _token_id(base, marker)
        if marker_id is None and marker.strip() and marker.strip() != marker:
            marker_id = _token_id(base, marker.strip())
        if marker_id is None:
            log.warning(
                "%s: marker %r is not a token of the tokenizer; prepending it as text",
                folder.path,
                marker,
            )
            prompt = marker + prompt
        else:
            data = {
                **data,
                "post_processor": _with_marker(data.get("post_processor"), marker, marker_id),
            }
    tok = tokenizer_from(data, folder.tokenizer_path)
    expansion = folder.expansion if query else None
    if expansion is not None and expansion.strategy == "fixed":
        max_length = expansion.length
    elif expansion is not None:
        max_length = max(max_length, expansion.length)
    added = tok.num_special_tokens_to_add(False)
    if max_length <= added:
        raise ConfigError(
            f"{name} length {max_length} leaves no room for text after {added} special tokens"
        )
    tok.enable_truncation(max_length=max_length)
    skips = name in folder.skiplist_tasks
    keep_only = folder.keep_only_token_ids
    return Side(
        name=name,
        tokenizer=tok,
        prompt=prompt,
        strip=strip,
        lower=folder.do_lower_case,
        max_length=max_length,
        expansion=expansion,
        expansion_id=_expansion_id(folder, base) if expansion is not None else None,
        scores_expansion=folder.scores_expansion or (expansion is not None and expansion.attend),
        skip_ids=_skip_ids(folder, base) if skips else None,
        keep_only_ids=(np.asarray(keep_only, dtype=np.int64) if keep_only and not query else None),
    )


__all__ = [
    "Side",
    "edges_matter",
    "load_tokenizer_json",
    "make_side",
    "named_token",
    "tokenizer_from",
]
