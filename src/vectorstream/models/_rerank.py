"""Rerankers (cross-encoders): score (query, text) pairs the way sentence-transformers does.

    load_rerank(path) ─▶ read the folder (architecture, labels, max length, activation)
                      ─▶ a logits graph (folder's onnx/, cache, or exported now) or torch
                      ─▶ Reranker.rerank(query, texts) / Reranker.score(pairs)

Fidelity target: ``sentence_transformers.CrossEncoder.predict`` (and ``rank``) on the same folder.
What it does, and so what this module does:

- pairs are tokenised together (``[CLS] query [SEP] text [SEP]`` for BERT), cut to the model's
  max length with the "longest_first" strategy (tokens come off the longer side first), never
  stripped;
- the max length is ``sentence_bert_config.json``'s ``max_seq_length`` when given, otherwise the
  tokenizer's ``model_max_length`` capped by the config's ``max_position_embeddings``;
- the activation applied to the logits is, in this order: the caller's; the one recorded in
  ``config_sentence_transformers.json`` (``activation_fn``); in ``config.json`` (``sentence_transformers
  .activation_fn``, or the pre-v4 ``sbert_ce_default_activation_function``); otherwise **sigmoid for
  a single-label model and identity for a multi-label one**. So a plain HF folder with one label
  scores in (0, 1) unless told otherwise, and a folder that recorded ``Identity`` (the ms-marco
  cross-encoders) returns raw logits. Paths outside ``torch.`` are not imported (sentence-transformers
  ignores them too without ``trust_remote_code``) and the default applies;
- a multi-label model's ``score`` returns every activated column, shape ``(n, num_labels)``, as
  ``predict`` does; ``rerank`` needs one score per pair and refuses such a model, as ``rank`` does.

Heavy imports (onnxruntime, torch, transformers) happen inside functions.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from ..errors import ConfigError, MissingDependencyError, ModelError
from ._backends import accepts_token_types, torch_inputs, torch_runtime
from ._embedder import pad_batch, token_budget_batches
from ._truncation import TruncationCounter

log = logging.getLogger("vectorstream.models.rerank")

KIND = "rerank"
ACTIVATIONS: tuple[str, ...] = ("sigmoid", "identity")  # what a caller may ask for
GRAPH_NAME = "rerank.onnx"
INT8_GRAPH_NAME = "rerank.int8.onnx"
INT8_REPORT_NAME = "rerank-int8-gate.json"
# int8 is kept only if it ranks the check pairs as fp32 does (Spearman over their logits).
MIN_SPEARMAN = 0.99
DEFAULT_TOKEN_BUDGET = 8192

_ST_PREFIX = "sentence_transformers."
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Activation classes a folder may record (dotted paths as sentence-transformers writes them).
_FOLDER_ACTIVATIONS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.Tanh": "tanh",
    "torch.nn.modules.activation.Softmax": "softmax",
    "torch.nn.Softmax": "softmax",
}


@dataclass(frozen=True, slots=True)
class RerankResult:
    """One text's place in a ranking: its index in the input, its score and the text itself."""

    index: int
    score: float
    text: str


@dataclass(frozen=True, slots=True)
class RerankFolder:
    """What a cross-encoder folder says about turning a pair into scores."""

    path: Path
    transformer_path: Path  # config.json, tokenizer.json and weights live here
    tokenizer_path: Path
    architecture: str
    num_labels: int
    max_tokens: int  # pair length, special tokens included
    do_lower_case: bool
    activation: str  # what the folder's configs (or the default) choose
    prompt: str  # the default prompt put before every query ("" for none)
    onnx_path: Path | None  # a logits graph shipped with the folder
    weights_path: Path | None
    identity_files: tuple[Path, ...]


# -- reading a folder -------------------------------------------------------------------------


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


def _json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _transformer_dir(path: Path, modules: Any) -> Path:
    """The Transformer module's folder; ModelError for any other module (a head we cannot run)."""
    if modules is None:
        return path
    if not isinstance(modules, list):
        raise ModelError(f"{path / 'modules.json'} is not a list of modules")
    found: Path | None = None
    for module in modules:
        kind = str(module.get("type", "")) if isinstance(module, dict) else ""
        if kind.rsplit(".", 1)[-1] == "Transformer" and kind.startswith(_ST_PREFIX):
            found = path / str(module.get("path", ""))
        else:
            raise ModelError(
                f"{path / 'modules.json'}: module {kind or module!r} is not supported by the "
                "reranker (supported: one Transformer module with a sequence-classification head)"
            )
    if found is None:
        raise ModelError(f"{path / 'modules.json'} lists no Transformer module")
    return found


def _is_seq_classification(config: Any) -> bool:
    architectures = config.get("architectures") if isinstance(config, dict) else None
    return isinstance(architectures, list) and any(
        str(a).endswith("ForSequenceClassification") for a in architectures
    )


def detect_rerank(path: Path) -> bool:
    """Whether the folder's own files say it is a cross-encoder (never raises).

    A sentence-transformers CrossEncoder folder says so in ``config_sentence_transformers.json``
    (v4+), in ``sentence_bert_config.json`` (``transformer_task: sequence-classification``) or, for
    older ones, in ``config.json`` (its recorded activation). A plain HF sequence-classification
    folder says nothing of the kind: load it with ``kind="rerank"``.
    """
    try:
        if not path.is_dir():
            return False
        st_config = _json_or_none(path / "config_sentence_transformers.json")
        if isinstance(st_config, dict) and st_config.get("model_type") == "CrossEncoder":
            return True
        try:
            transformer = _transformer_dir(path, _json_or_none(path / "modules.json"))
        except ModelError:
            return False
        config = _json_or_none(transformer / "config.json")
        if not _is_seq_classification(config):
            return False
        sbert = _json_or_none(transformer / "sentence_bert_config.json")
        if isinstance(sbert, dict) and sbert.get("transformer_task") == "sequence-classification":
            return True
        return "sbert_ce_default_activation_function" in config or isinstance(
            config.get("sentence_transformers"), dict
        )
    except Exception:  # detection runs on every load_model call: an odd folder is "not mine"
        return False


def _folder_activation(recorded: Any, where: str) -> str | None:
    """The activation a recorded dotted path names; None where sentence-transformers ignores it."""
    if not isinstance(recorded, str) or not recorded:
        return None
    if not recorded.startswith("torch."):
        log.warning(
            "%s names the activation %r; like sentence-transformers without trust_remote_code, "
            "it is not imported and the default applies",
            where,
            recorded,
        )
        return None
    name = _FOLDER_ACTIVATIONS.get(recorded)
    if name is None:
        raise ModelError(
            f"{where} names the activation {recorded!r}, which the reranker cannot apply "
            f"(supported: {sorted(set(_FOLDER_ACTIVATIONS))})"
        )
    return name


def _choose_activation(st_config: Any, config: dict[str, Any], num_labels: int, where: Path) -> str:
    # sentence-transformers' order: its own config file, then config.json (v4 key, else the
    # pre-v4 key), then the default by label count.
    if isinstance(st_config, dict) and "activation_fn" in st_config:
        chosen = _folder_activation(
            st_config["activation_fn"], str(where / "config_sentence_transformers.json")
        )
        if chosen is not None:
            return chosen
    st_section = config.get("sentence_transformers")
    recorded: Any = None
    if isinstance(st_section, dict) and "activation_fn" in st_section:
        recorded = st_section["activation_fn"]
    elif config.get("sbert_ce_default_activation_function") is not None:
        recorded = config["sbert_ce_default_activation_function"]
    chosen = _folder_activation(recorded, str(where / "config.json"))
    if chosen is not None:
        return chosen
    return "sigmoid" if num_labels == 1 else "identity"


def _max_tokens(sbert: Any, config: dict[str, Any], tok_config: Any) -> int:
    if isinstance(sbert, dict) and isinstance(sbert.get("max_seq_length"), int):
        return int(sbert["max_seq_length"])
    limits: list[int] = []
    model_max = tok_config.get("model_max_length") if isinstance(tok_config, dict) else None
    if isinstance(model_max, int | float) and 0 < model_max < 1_000_000:
        limits.append(int(model_max))
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and positions > 0:  # xlnet writes -1 for "no limit"
        limits.append(positions)
    return min(limits) if limits else 512


def _prompt(st_config: Any) -> str:
    if not isinstance(st_config, dict):
        return ""
    name = st_config.get("default_prompt_name")
    prompts = st_config.get("prompts")
    if not name:
        return ""
    if not isinstance(prompts, dict) or name not in prompts:
        raise ModelError(f"the default prompt {name!r} is not among the folder's prompts")
    return str(prompts[name])


def read_rerank_folder(path: Path) -> RerankFolder:
    """Parse a cross-encoder folder; ModelError naming whatever is missing or unsupported."""
    if not path.is_dir():
        raise ModelError(f"model folder {path} does not exist")
    modules_file = path / "modules.json"
    transformer = _transformer_dir(path, _json(modules_file) if modules_file.is_file() else None)
    config_file = transformer / "config.json"
    if not config_file.is_file():
        raise ModelError(f"model folder {path} has no config.json (looked for {config_file})")
    config = _json(config_file)
    if not isinstance(config, dict) or not _is_seq_classification(config):
        architectures = config.get("architectures") if isinstance(config, dict) else None
        raise ModelError(
            f"{config_file} names {architectures!r}; a reranker needs a "
            "*ForSequenceClassification model (a cross-encoder)"
        )
    tokenizer_path = transformer / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise ModelError(
            f"model folder {path} has no tokenizer.json (looked for {tokenizer_path}); "
            "only fast-tokenizer folders are supported"
        )
    labels = config.get("num_labels")
    if not isinstance(labels, int):
        id2label = config.get("id2label")
        labels = len(id2label) if isinstance(id2label, dict) and id2label else 2
    sbert = _json_or_none(transformer / "sentence_bert_config.json")
    st_config_file = path / "config_sentence_transformers.json"
    st_config = _json(st_config_file) if st_config_file.is_file() else None
    onnx_path = transformer / "onnx" / "model.onnx"
    weights = next((transformer / n for n in _WEIGHT_FILES if (transformer / n).is_file()), None)
    decisive = (weights or onnx_path, config_file, tokenizer_path)
    configs = (
        transformer / "tokenizer_config.json",
        transformer / "sentence_bert_config.json",
        modules_file,
        st_config_file,
    )
    return RerankFolder(
        path=path,
        transformer_path=transformer,
        tokenizer_path=tokenizer_path,
        architecture=str(config["architectures"][0]),
        num_labels=labels,
        max_tokens=_max_tokens(sbert, config, _json_or_none(transformer / "tokenizer_config.json")),
        do_lower_case=bool(isinstance(sbert, dict) and sbert.get("do_lower_case")),
        activation=_choose_activation(st_config, config, labels, path),
        prompt=_prompt(st_config),
        onnx_path=onnx_path if onnx_path.is_file() else None,
        weights_path=weights,
        identity_files=(*decisive, *configs),
    )


# -- engines: token ids in, logits (batch, num_labels) out --------------------------------------


class _OnnxLogits:
    name = "onnx"

    def __init__(self, path: Path, threads: int | None) -> None:
        from ._backends import onnx_session

        self.path = path
        self._session = onnx_session(path, threads)
        self.threads: int | None = int(self._session.get_session_options().intra_op_num_threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= self._inputs:
            raise ModelError(f"ONNX graph {path} lacks input_ids/attention_mask inputs")
        output = self._session.get_outputs()[0]
        if len(output.shape) != 2:
            raise ModelError(
                f"ONNX graph {path}: first output {output.name!r} must be logits "
                f"(batch, labels), got shape {output.shape}"
            )
        self._output = output.name

    def __call__(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = types
        try:
            (logits,) = self._session.run([self._output], feed)
        except Exception as exc:  # ORT raises its own pybind classes
            raise ModelError(f"ONNX Runtime failed on {self.path}: {exc}") from exc
        return np.asarray(logits, dtype=np.float32)


def _graph_has_logits(path: Path) -> bool:
    """Whether a shipped ``onnx/model.onnx`` outputs logits (not token states), read cheaply."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        dims = model.graph.output[0].type.tensor_type.shape.dim
        return len(dims) == 2
    except Exception:  # an unreadable graph is not one we can use
        return False


def _load_classifier(folder: Path, *, eager: bool) -> Any:
    try:
        from transformers import AutoModelForSequenceClassification
    except ImportError as exc:
        raise MissingDependencyError("transformers", "torch") from exc
    from ._backends import quiet_transformers

    kwargs = {"attn_implementation": "eager"} if eager else {}
    try:
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(str(folder), **kwargs)
    except Exception as exc:  # transformers raises OSError/ValueError/... for bad folders
        raise ModelError(f"transformers cannot load {folder}: {exc}") from exc
    return model.eval()


class _TorchLogits:
    name = "torch"

    def __init__(self, folder: Path, threads: int | None) -> None:
        self._torch, self.device = torch_runtime(threads)
        self.threads = threads
        self._model = _load_classifier(folder, eager=False).to(self.device)
        self._types = accepts_token_types(self._model)

    def __call__(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        torch = self._torch
        kwargs = torch_inputs(torch, self.device, ids, mask, types, self._types)
        try:
            with torch.inference_mode():
                logits = self._model(**kwargs).logits
        except RuntimeError as exc:
            raise ModelError(f"torch forward pass failed: {exc}") from exc
        return np.asarray(logits.float().cpu().numpy(), dtype=np.float32)


def export_rerank_graph(folder: RerankFolder, target: Path) -> Path:
    """Export the sequence-classification model to ``target`` (output: logits) unless it exists."""
    if target.is_file():
        return target
    try:
        import torch  # noqa: F401  (here only to name the missing extra)
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch") from exc
    from ._export import export_lock, export_token_graph

    with export_lock(target.parent):
        if target.is_file():  # another process exported while we waited
            return target
        log.warning("exporting %s to ONNX at %s (once; later loads reuse it)", folder.path, target)
        # Eager attention exports plain MatMul/Softmax, which ONNX Runtime fuses.
        model = _load_classifier(folder.transformer_path, eager=True)
        export_token_graph(model, target, lambda out: out.logits, "logits", 2)
    return target


# -- activations ------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Two branches so neither overflows in exp for large |x|.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    # torch.nn.Softmax() without dim picks dim 1 for a (batch, labels) matrix.
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


_APPLY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": _sigmoid,
    "identity": lambda x: x,
    "tanh": np.tanh,
    "softmax": _softmax,
}


# -- the model --------------------------------------------------------------------------------


def _load_tokenizer(path: Path) -> tokenizers.Tokenizer:
    try:
        return tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for bad files
        raise ModelError(f"cannot load tokenizer {path}: {exc}") from exc


def _lowercased(tok: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
    # sentence-transformers' do_lower_case puts a Lowercase normaliser in front of the tokenizer's.
    from tokenizers import normalizers

    steps: list[Any] = [normalizers.Lowercase()]
    if tok.normalizer is not None:
        steps.append(tok.normalizer)
    tok.normalizer = normalizers.Sequence(steps)
    return tok


def _pad_id(tok: tokenizers.Tokenizer, config_file: Path) -> int:
    padding = tok.padding
    if padding and isinstance(padding.get("pad_id"), int):
        return int(padding["pad_id"])
    config = _json_or_none(config_file)
    if isinstance(config, dict) and isinstance(config.get("pad_token_id"), int):
        return int(config["pad_token_id"])
    for name in ("[PAD]", "<pad>"):
        token_id = tok.token_to_id(name)
        if token_id is not None:
            return token_id
    return 0


class Reranker:
    """A loaded cross-encoder. Safe to call from several threads at once.

    Build it with :func:`load_rerank` (or ``load_model(spec, kind="rerank")``).
    """

    kind = KIND

    def __init__(
        self,
        *,
        model_id: str,
        folder: RerankFolder,
        engine: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
        backend: str,
        identity: str,
        quantized: bool = False,
        threads: int | None = None,
        activation: str | None = None,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
    ) -> None:
        if activation is not None and activation not in ACTIVATIONS:
            raise ConfigError(
                f"activation must be one of {ACTIVATIONS} or None, got {activation!r}"
            )
        if token_budget < 1:
            raise ConfigError(f"token_budget must be positive, got {token_budget}")
        self.model_id = model_id
        self.folder = folder
        self.path = folder.path
        self._engine = engine
        self.backend = backend
        self.quantized = quantized
        self.threads = threads
        self.activation: str = activation or folder.activation
        self.num_labels = folder.num_labels
        self.dim = folder.num_labels  # the width of one pair's scores
        self.max_tokens = folder.max_tokens
        self.token_budget = token_budget
        self.fingerprint = (
            f"{model_id}@{identity[:16]};kind={KIND};quantized={int(quantized)}"
            f";activation={self.activation};max_tokens={self.max_tokens}"
        )
        self.tokenizer_path = folder.tokenizer_path
        base = _load_tokenizer(folder.tokenizer_path)
        base.no_padding()
        base.no_truncation()
        if folder.do_lower_case:
            _lowercased(base)
        self.tokenizer: tokenizers.Tokenizer = base
        self._encoder = _load_tokenizer(folder.tokenizer_path)
        self._encoder.no_padding()
        self._encoder.enable_truncation(max_length=self.max_tokens, strategy="longest_first")
        if folder.do_lower_case:
            _lowercased(self._encoder)
        # A document is the second sequence of a pair, so it shares the pair's special tokens.
        self.num_special_tokens: int = base.num_special_tokens_to_add(True)
        self._pad = _pad_id(base, folder.transformer_path / "config.json")
        self._lock = threading.Lock()
        self._truncations = TruncationCounter(log, "pairs", level=logging.INFO)
        self.scored_pairs = 0

    @property
    def truncated_pairs(self) -> int:
        """Pairs cut to ``max_tokens`` since load (all threads)."""
        return self._truncations.total

    def __repr__(self) -> str:
        return (
            f"Reranker({self.model_id!r}, kind={KIND!r}, backend={self.backend!r}, "
            f"labels={self.num_labels}, max_tokens={self.max_tokens}, "
            f"activation={self.activation!r}, quantized={self.quantized})"
        )

    # -- tokenising -------------------------------------------------------------------------

    @staticmethod
    def _check_pairs(pairs: Sequence[Any]) -> list[tuple[str, str]]:
        if isinstance(pairs, str | tuple) and len(pairs) == 2 and isinstance(pairs[0], str):
            raise TypeError("score() takes a sequence of (query, text) pairs; wrap one in a list")
        out: list[tuple[str, str]] = []
        for i, pair in enumerate(pairs):
            if (
                not isinstance(pair, tuple | list)
                or len(pair) != 2
                or not all(isinstance(p, str) for p in pair)
            ):
                raise TypeError(f"pair {i} is not a (str, str) pair: {type(pair).__name__}")
            out.append((pair[0], pair[1]))
        return out

    def tokenize_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[tokenizers.Encoding]:
        """Encodings of (query, text) pairs, cut to ``max_tokens`` longest-side first (and counted)."""
        items = self._check_pairs(pairs)
        if not items:
            return []
        prompt = self.folder.prompt
        encodings = self._encoder.encode_batch([(prompt + q, t) for q, t in items])
        self._truncations.record(encodings, self.max_tokens)
        return list(encodings)

    # -- scoring ----------------------------------------------------------------------------

    def logits_tokenized(self, encodings: Sequence[tokenizers.Encoding]) -> np.ndarray:
        """Raw logits, shape ``(n, num_labels)``, input order; batched by token budget inside."""
        lengths = [len(e.ids) for e in encodings]
        for i, length in enumerate(lengths):
            if length > self.max_tokens:
                raise ValueError(
                    f"encoding {i} has {length} tokens, more than max_tokens={self.max_tokens}; "
                    "build encodings with tokenize_pairs(), which truncates"
                )
        out = np.empty((len(encodings), self.num_labels), dtype=np.float32)
        for batch in token_budget_batches(lengths, self.token_budget):
            ids, mask, types = pad_batch(encodings, batch, self._pad)
            logits = self._engine(ids, mask, types)
            if logits.shape != (len(batch), self.num_labels):
                raise ModelError(
                    f"the model returned logits of shape {logits.shape}, expected "
                    f"({len(batch)}, {self.num_labels})"
                )
            out[batch] = logits
        with self._lock:
            self.scored_pairs += len(encodings)
        return out

    def score_tokenized(self, encodings: Sequence[tokenizers.Encoding]) -> np.ndarray:
        """Scores of encodings from :meth:`tokenize_pairs`, as :meth:`score` returns them."""
        scores = _APPLY[self.activation](self.logits_tokenized(encodings))
        return scores[:, 0] if self.num_labels == 1 else scores

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Scores of (query, text) pairs in input order, as ``CrossEncoder.predict`` gives them.

        Shape ``(n,)`` for a single-label model, ``(n, num_labels)`` otherwise; float32.
        """
        return self.score_tokenized(self.tokenize_pairs(pairs))

    def rerank(
        self, query: str, texts: Sequence[str], *, top_n: int | None = None
    ) -> list[RerankResult]:
        """``texts`` ranked by relevance to ``query``, best first (ties keep input order)."""
        if not isinstance(query, str):
            raise TypeError(f"query is {type(query).__name__}, not str")
        if isinstance(texts, str):
            raise TypeError("rerank() takes a sequence of texts, not one string; wrap it in a list")
        if top_n is not None and top_n < 1:
            raise ConfigError(f"top_n must be at least 1, got {top_n}")
        if self.num_labels != 1:
            raise ModelError(
                f"{self.model_id} has {self.num_labels} labels; ranking needs one score per pair "
                "(as CrossEncoder.rank does): use score() for its per-label scores"
            )
        items = list(texts)
        scores = self.score([(query, t) for t in items]) if items else np.empty(0, np.float32)
        order = sorted(range(len(items)), key=lambda i: -float(scores[i]))
        if top_n is not None:
            order = order[:top_n]
        return [RerankResult(i, float(scores[i]), items[i]) for i in order]


# -- int8, behind a ranking gate --------------------------------------------------------------


def _gate_pairs() -> list[tuple[str, str]]:
    from ._checkset import check_texts

    texts = check_texts()
    queries = [t for t in texts if t and len(t) < 40][:8] or ["query"]
    return [(queries[i % len(queries)], text) for i, text in enumerate(texts * 2)]


def _ranks(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(a.ravel()), _ranks(b.ravel())
    ra -= ra.mean()
    rb -= rb.mean()
    den = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else 1.0


def _ensure_int8(
    model_id: str, folder: RerankFolder, fp32: Path, directory: Path, threads: int | None
) -> Path:
    from ._export import _temp_path, export_lock, quantize_int8

    target = directory / INT8_GRAPH_NAME
    report_file = directory / INT8_REPORT_NAME
    if target.is_file() and report_file.is_file():
        return target
    with export_lock(directory):
        if target.is_file() and report_file.is_file():
            return target
        log.warning("quantising %s to int8 and checking that it ranks as fp32 does", fp32)
        candidate = _temp_path(directory, ".int8.onnx")
        try:
            quantize_int8(fp32, candidate)
            pairs = _gate_pairs()
            logits = []
            for graph in (fp32, candidate):
                model = Reranker(
                    model_id=model_id,
                    folder=folder,
                    engine=_OnnxLogits(graph, threads),
                    backend="onnx",
                    identity="gate",
                )
                logits.append(model.logits_tokenized(model.tokenize_pairs(pairs)))
            rho = _spearman(logits[0], logits[1])
            report = {"spearman": rho, "min_spearman": MIN_SPEARMAN, "pairs": len(pairs)}
            log.warning("int8 vs fp32 over %d pairs: Spearman %.4f", len(pairs), rho)
            if rho < MIN_SPEARMAN:
                raise ModelError(
                    f"int8 export of {model_id} refused: over {len(pairs)} check pairs its scores "
                    f"rank with Spearman {rho:.4f} to fp32's (need >= {MIN_SPEARMAN}); use fp32"
                )
            tmp_report = _temp_path(directory, ".json")
            tmp_report.write_text(json.dumps(report, indent=2))
            os.replace(candidate, target)
            os.replace(tmp_report, report_file)
        except OSError as exc:
            raise ModelError(f"cannot write the int8 graph into {directory}: {exc}") from exc
        finally:
            candidate.unlink(missing_ok=True)
    return target


# -- loading ----------------------------------------------------------------------------------


def load_rerank(
    path: Path,
    model_id: str,
    *,
    backend: str | None = None,
    quantized: bool = False,
    threads: int | None = None,
    cache: Path,
    activation: str | None = None,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
) -> Reranker:
    """A :class:`Reranker` for the cross-encoder folder at ``path``.

    ``backend``: "onnx" (a logits graph from the folder's ``onnx/model.onnx`` or exported once
    into the cache), "torch", or None (ONNX whenever a graph exists or can be exported).
    ``quantized``: the int8 graph, kept only when it ranks the check pairs as fp32 does.
    ``activation``: "sigmoid", "identity", or None for the folder's own (see the module doc).
    """
    from ._backends import torch_available
    from ._export import export_dir
    from ._folder import files_identity

    if backend not in (None, "onnx", "torch"):
        raise ConfigError(f"backend must be 'onnx', 'torch' or None, got {backend!r}")
    if quantized and backend == "torch":
        raise ConfigError("quantized=True runs the int8 ONNX graph; it needs backend 'onnx'")
    if activation is not None and activation not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {ACTIVATIONS} or None, got {activation!r}")
    folder = read_rerank_folder(Path(path))
    identity = files_identity(
        list(folder.identity_files), (KIND, folder.max_tokens, folder.do_lower_case, folder.prompt)
    )
    weights = folder.weights_path or folder.onnx_path
    graph_identity = files_identity(
        [p for p in (weights, folder.transformer_path / "config.json") if p is not None],
        (KIND, "logits"),
    )
    directory = export_dir(cache, model_id, graph_identity)

    engine: _OnnxLogits | _TorchLogits
    if backend == "torch":
        engine = _TorchLogits(folder.transformer_path, threads)
    else:
        graph: Path | None = None
        if folder.onnx_path is not None and _graph_has_logits(folder.onnx_path):
            graph = folder.onnx_path
        elif (directory / GRAPH_NAME).is_file():
            graph = directory / GRAPH_NAME
        elif torch_available() and folder.weights_path is not None:
            try:
                graph = export_rerank_graph(folder, directory / GRAPH_NAME)
            except (ModelError, OSError) as exc:
                if backend == "onnx" or quantized:
                    raise ModelError(f"cannot export {model_id} to ONNX: {exc}") from exc
                # Automatic mode: a failed export must not stop the user; torch still works.
                log.warning("ONNX export failed (%s); using the torch backend", exc)
        if graph is None and (backend == "onnx" or quantized or not torch_available()):
            raise ModelError(
                f"{model_id} has no logits graph (looked in {folder.transformer_path / 'onnx'} "
                f"and {directory}) and torch is not installed to export one or run the model: "
                "pip install 'vectorstream[torch]'"
            )
        if graph is None:
            engine = _TorchLogits(folder.transformer_path, threads)
        elif quantized:
            engine = _OnnxLogits(_ensure_int8(model_id, folder, graph, directory, threads), threads)
        else:
            engine = _OnnxLogits(graph, threads)
    return Reranker(
        model_id=model_id,
        folder=folder,
        engine=engine,
        backend=engine.name,
        identity=identity,
        quantized=quantized,
        threads=engine.threads,
        activation=activation,
        token_budget=token_budget,
    )


__all__ = [
    "ACTIVATIONS",
    "MIN_SPEARMAN",
    "RerankFolder",
    "RerankResult",
    "Reranker",
    "detect_rerank",
    "export_rerank_graph",
    "load_rerank",
    "read_rerank_folder",
]
