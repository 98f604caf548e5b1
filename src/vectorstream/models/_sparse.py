"""Learned sparse embeddings (SPLADE): one weight per vocabulary term for each text.

    masked-LM logits (batch, tokens, vocab) ─▶ attention mask ─▶ log(1 + ReLU) ─▶ max (or sum)
    over tokens ─▶ (batch, vocab) ─▶ the non-zero terms, sorted by term id

The pooling runs inside the ONNX graph (or, on torch, in place on the model's own logits), so the
(batch, tokens, vocab) logits never reach Python. The folder is read the sentence-transformers
``SparseEncoder`` way: ``modules.json`` with an ``MLMTransformer`` (or a ``Transformer`` whose task is
``fill-mask``) and a ``SpladePooling`` module, whose config names the pooling (max or sum) and the
activation (relu, or log1p_relu: one more log1p). A plain HuggingFace ``*ForMaskedLM`` folder is not
detected as sparse (it may as well be a plain language model) but loads when the caller names the
kind, with max pooling and relu, as sentence-transformers builds it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tokenizers

from ..errors import ConfigError, MissingDependencyError, ModelError
from ..types import Embedding, SparseVector
from ._backends import accepts_token_types, torch_inputs, torch_runtime

log = logging.getLogger("vectorstream.models.sparse")

KIND = "sparse"
POOLINGS: tuple[str, ...] = ("max", "sum")
ACTIVATIONS: tuple[str, ...] = ("relu", "log1p_relu")
GRAPH_NAME = "splade.onnx"  # input ids in, (batch, vocab) term weights out
INT8_NAME = "splade.int8.onnx"
CHECK_NAME = "splade-int8-check.json"
# Each forward pass holds (tokens x vocab) logits inside the engine, and ONNX Runtime keeps a few
# working copies of them: the default budget keeps the logits near 2**23 floats (32 MiB) whatever
# the vocabulary, and never below one full window (a 30k vocabulary at 512 tokens: 62 MiB). The
# MLM head's matrix product is as efficient at one window as at several.
_LOGIT_BUDGET = 2**23
# The int8 graph is kept only when the heaviest terms stay the same: of the top terms of each check
# text (at most _CHECK_TOP), this share on average, and this share for the worst text.
_CHECK_TOP = 20
MIN_MEAN_OVERLAP = 0.9
MIN_OVERLAP = 0.7

_TRANSFORMERS = ("MLMTransformer", "Transformer")
_ASYMMETRIC = ("Router", "Asym")
_MISSING_LIMIT = 1_000_000  # tokenizer_config's "no limit" is a huge number
_PROTO_LIMIT = 1_800_000_000  # weight bytes past which a graph no longer fits one protobuf


def _short_type(module: dict[str, Any]) -> str:
    # "sentence_transformers.sparse_encoder.modules.splade_pooling.SpladePooling" and the older
    # "sentence_transformers.sparse_encoder.models.SpladePooling" both end with the class name.
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


def _json_or_empty(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = _json(path)
    return data if isinstance(data, dict) else {}


# -- the folder ------------------------------------------------------------------------------


def detect_sparse(path: Path) -> bool:
    """Whether the folder's own files say it is a SPLADE model: a ``SpladePooling`` module, or a
    sentence-transformers config whose model type is ``SparseEncoder``. Never raises."""
    try:
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
        if isinstance(modules, list) and any(
            isinstance(m, dict) and _short_type(m) == "SpladePooling" for m in modules
        ):
            return True
        st_config = json.loads(
            (path / "config_sentence_transformers.json").read_text(encoding="utf-8")
        )
        return isinstance(st_config, dict) and st_config.get("model_type") == "SparseEncoder"
    except (OSError, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class SparseFolder:
    """What a SPLADE folder says: where its parts are and how to pool, truncate and prompt."""

    path: Path
    transformer_path: Path  # config.json, weights, tokenizer.json
    tokenizer_path: Path
    vocab_size: int
    pooling: str  # "max" | "sum"
    activation: str  # "relu" | "log1p_relu"
    max_tokens: int  # document side, special tokens included
    query_max_tokens: int
    do_lower_case: bool
    query_prompt: str
    document_prompt: str
    max_active_dims: int | None  # the folder's own top-k, when it sets one
    onnx_path: Path | None  # a logits graph shipped in the folder (onnx/model.onnx)
    weights_path: Path | None
    identity_files: tuple[Path, ...]  # everything that decides the weights


def _modules(path: Path) -> tuple[Path, str, Path]:
    """The transformer folder, its module class and the SpladePooling config file."""
    modules_file = path / "modules.json"
    modules = _json(modules_file)
    if not isinstance(modules, list):
        raise ModelError(f"{modules_file} is not a list of modules")
    transformer: Path | None = None
    transformer_kind = ""
    pooling: Path | None = None
    for module in modules:
        kind = _short_type(module)
        sub = path / str(module.get("path", ""))
        if kind in _ASYMMETRIC:
            raise ModelError(
                f"{modules_file}: a {kind} module (separate query and document encoders, such as an "
                "inference-free SparseStaticEmbedding query side) is not supported; only symmetric "
                "SPLADE (one masked-LM encoder for both sides) is"
            )
        if kind in _TRANSFORMERS and transformer is None and pooling is None:
            transformer, transformer_kind = sub, kind
        elif kind == "SpladePooling" and transformer is not None and pooling is None:
            pooling = sub / "config.json"
        else:
            raise ModelError(
                f"{modules_file}: module {module.get('type')!r} is not supported here; a SPLADE "
                "folder holds an MLMTransformer (or fill-mask Transformer) then SpladePooling"
            )
    if transformer is None or pooling is None:
        raise ModelError(
            f"{modules_file} lacks a {'masked-LM transformer' if transformer is None else 'SpladePooling'}"
            " module; a SPLADE folder holds an MLMTransformer (or fill-mask Transformer) then "
            "SpladePooling"
        )
    return transformer, transformer_kind, pooling


def _limits(
    transformer: Path, config: dict[str, Any], st_config: dict[str, Any]
) -> tuple[int, int]:
    """Document and query token limits, by sentence-transformers' rules."""
    processor = st_config.get("processor_kwargs") or st_config.get("tokenizer_args") or {}
    if isinstance(processor.get("model_max_length"), int):
        limit = int(processor["model_max_length"])  # given explicitly: not capped
    elif isinstance(st_config.get("max_seq_length"), int):
        limit = int(st_config["max_seq_length"])  # older folders: not capped either
    else:
        # The tokenizer's model_max_length, capped at the position table.
        tok_limit = _json_or_empty(transformer / "tokenizer_config.json").get("model_max_length")
        positions = config.get("max_position_embeddings")
        limits = [
            v for v in (tok_limit, positions) if isinstance(v, int) and 0 < v < _MISSING_LIMIT
        ]
        limit = min(limits) if limits else 512
    document = st_config.get("document_length") or limit
    query = st_config.get("query_length") or limit
    # Per-module processing_kwargs win over the per-side lengths (text over common).
    processing = st_config.get("processing_kwargs") or {}
    for bucket in ("common", "text"):
        given = (processing.get(bucket) or {}).get("max_length")
        if isinstance(given, int):
            document = query = given
    return int(document), int(query)


def _prompts(st_config: dict[str, Any]) -> tuple[str, str]:
    """The query and document prompts sentence-transformers' encode_query/encode_document use."""
    prompts = st_config.get("prompts") or {}
    default_name = st_config.get("default_prompt_name")
    default = prompts.get(default_name) if default_name else None

    def pick(names: tuple[str, ...]) -> str:
        for name in names:
            if name in prompts:
                return str(prompts[name] or "")
        return str(default or "")

    return pick(("query",)), pick(("document", "passage", "corpus"))


def read_sparse_folder(path: Path) -> SparseFolder:
    """Parse a SPLADE folder; a ``ModelError`` names any missing or unsupported part."""
    if not path.is_dir():
        raise ModelError(f"model folder {path} does not exist")
    pooling_file: Path | None = None
    transformer = path
    # A plain masked-LM folder runs as fill-mask (sentence-transformers builds it so); so does an
    # MLMTransformer module; a Transformer module says its task, feature extraction if it does not.
    default_task = "fill-mask"
    if (path / "modules.json").is_file():
        transformer, kind, pooling_file = _modules(path)
        default_task = "feature-extraction" if kind == "Transformer" else "fill-mask"
    pooling_cfg = _json_or_empty(pooling_file) if pooling_file is not None else {}
    config_file = transformer / "config.json"
    if not config_file.is_file():
        raise ModelError(f"model folder {path} has no config.json (looked for {config_file})")
    config = _json_or_empty(config_file)
    st_config = _json_or_empty(transformer / "sentence_bert_config.json")
    task = st_config.get("transformer_task", default_task)
    if task != "fill-mask":
        raise ModelError(
            f"{transformer / 'sentence_bert_config.json'}: transformer_task is {task!r}; SPLADE needs "
            "the masked-LM head (transformer_task 'fill-mask')"
        )
    architectures = config.get("architectures") or []
    if architectures and not any(str(a).endswith("ForMaskedLM") for a in architectures):
        raise ModelError(
            f"{path} has no masked-LM head: {config_file} names {architectures}, SPLADE needs a "
            "*ForMaskedLM model (the MLM head turns token states into vocabulary logits)"
        )
    if st_config.get("query_expansion"):
        raise ModelError(f"{path}: query_expansion (ColBERT-style) is not supported for SPLADE")
    vocab = config.get("vocab_size")
    if not isinstance(vocab, int) or vocab < 1:
        raise ModelError(f"{config_file} does not give vocab_size")
    tokenizer_path = transformer / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise ModelError(
            f"model folder {path} has no tokenizer.json (looked for {tokenizer_path}); "
            "only fast-tokenizer folders are supported"
        )

    pooling = str(pooling_cfg.get("pooling_strategy", "max"))
    activation = str(pooling_cfg.get("activation_function", "relu"))
    if pooling not in POOLINGS:
        raise ModelError(f"{path}: SpladePooling strategy {pooling!r} is not one of {POOLINGS}")
    if activation not in ACTIVATIONS:
        raise ModelError(
            f"{path}: SpladePooling activation {activation!r} is not one of {ACTIVATIONS}"
        )
    document, query = _limits(transformer, config, st_config)
    model_config = _json_or_empty(path / "config_sentence_transformers.json")
    query_prompt, document_prompt = _prompts(model_config)
    active = model_config.get("max_active_dims")

    weights = next(
        (
            transformer / n
            for n in ("model.safetensors", "pytorch_model.bin")
            if (transformer / n).is_file()
        ),
        None,
    )
    onnx_path = transformer / "onnx" / "model.onnx"
    identity_files = (
        *([weights] if weights is not None else []),
        onnx_path,
        config_file,
        tokenizer_path,
        transformer / "tokenizer_config.json",
        transformer / "sentence_bert_config.json",
        path / "modules.json",
        path / "config_sentence_transformers.json",
        *([pooling_file] if pooling_file is not None else []),
    )
    return SparseFolder(
        path=path,
        transformer_path=transformer,
        tokenizer_path=tokenizer_path,
        vocab_size=vocab,
        pooling=pooling,
        activation=activation,
        max_tokens=document,
        query_max_tokens=query,
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        query_prompt=query_prompt,
        document_prompt=document_prompt,
        max_active_dims=active if isinstance(active, int) and active > 0 else None,
        onnx_path=onnx_path if onnx_path.is_file() else None,
        weights_path=weights,
        identity_files=identity_files,
    )


# -- engines: token ids in, (batch, vocab) term weights out ------------------------------------


class _Engine(Protocol):
    name: str
    threads: int | None

    def run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray: ...


class _OnnxEngine:
    """A SPLADE graph (pooling inside) on ONNX Runtime."""

    name = "onnx"

    def __init__(self, path: Path, threads: int | None) -> None:
        from ._backends import onnx_session
        from ._threads import available_cores

        self.path = path
        self.threads: int | None = threads if threads and threads > 0 else available_cores()
        self._session = onnx_session(path, self.threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._inputs
        outputs = self._session.get_outputs()
        if missing or len(outputs[0].shape) != 2:
            raise ModelError(
                f"{path} is not a SPLADE graph (inputs {sorted(self._inputs)}, first output shape "
                f"{outputs[0].shape}; expected input_ids and attention_mask in, (batch, vocab) out)"
            )
        self._output = outputs[0].name

    def run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = types
        try:
            (weights,) = self._session.run([self._output], feed)
        except Exception as exc:  # ORT raises its own pybind classes
            raise ModelError(f"ONNX Runtime failed on {self.path}: {exc}") from exc
        return np.asarray(weights, dtype=np.float32)


def _load_mlm(folder: SparseFolder, *, eager: bool = False) -> Any:
    """The folder's ``AutoModelForMaskedLM``, refusing one whose MLM head would be made up."""
    try:
        from transformers import AutoModelForMaskedLM
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch") from exc
    from ._backends import quiet_transformers

    kwargs: dict[str, Any] = {"output_loading_info": True}
    if eager:
        # Eager attention exports plain MatMul/Softmax that ORT's optimiser fuses.
        kwargs["attn_implementation"] = "eager"
    try:
        with quiet_transformers():
            model, info = AutoModelForMaskedLM.from_pretrained(
                str(folder.transformer_path), **kwargs
            )
    except Exception as exc:  # transformers raises OSError/ValueError/... for bad folders
        raise ModelError(
            f"transformers cannot load {folder.transformer_path} as a masked LM: {exc}"
        ) from exc
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise ModelError(
            f"{folder.path} has no complete masked-LM head: the weights lack {missing[:6]}"
            f"{' ...' if len(missing) > 6 else ''}"
        )
    return model.eval()


class _TorchEngine:
    """The masked LM under ``inference_mode``; the head works in place on the model's logits."""

    name = "torch"

    def __init__(self, folder: SparseFolder, threads: int | None) -> None:
        self.threads = threads if threads and threads > 0 else None
        self._torch, self.device = torch_runtime(self.threads)
        self._model = _load_mlm(folder).to(self.device)
        self._types = accepts_token_types(self._model)
        self._pooling = folder.pooling
        self._log1p_twice = folder.activation == "log1p_relu"

    def run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        torch = self._torch
        kwargs = torch_inputs(torch, self.device, ids, mask, types, self._types)
        try:
            with torch.inference_mode():
                logits = self._model(**kwargs).logits  # (batch, tokens, vocab)
                padding = (kwargs["attention_mask"] == 0).unsqueeze(-1)
                if self._pooling == "max":
                    # log1p(relu(.)) never decreases, so it commutes with max: pool the raw
                    # logits (padding set to 0, as the reference's mask product does) and
                    # transform only the (batch, vocab) result.
                    pooled = logits.masked_fill_(padding, 0.0).amax(dim=1).relu_().log1p_()
                    if self._log1p_twice:
                        pooled.log1p_()
                else:
                    logits.relu_().log1p_()
                    if self._log1p_twice:
                        logits.log1p_()
                    pooled = logits.masked_fill_(padding, 0.0).sum(dim=1)
        except RuntimeError as exc:
            raise ModelError(f"torch forward pass failed: {exc}") from exc
        return pooled.float().cpu().numpy()


# -- the graph: the model's logits graph with the SPLADE head appended --------------------------


def _export_logits(folder: SparseFolder, target: Path) -> Path:
    """Trace the masked LM to an ONNX graph whose output is its logits (batch, tokens, vocab)."""
    try:
        import torch  # noqa: F401  (here only to name the missing extra)
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch") from exc
    from ._export import export_token_graph

    model = _load_mlm(folder, eager=True)
    return export_token_graph(model, target, lambda out: out.logits, "logits", 3)


def _logits_output(model: Any, vocab: int, source: Path) -> Any:
    """The graph output holding (batch, tokens, vocab) logits."""
    candidates = []
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if len(dims) == 3 and (not dims[2].HasField("dim_value") or dims[2].dim_value == vocab):
            candidates.append(output)
    named = [o for o in candidates if o.name == "logits"]
    if not (named or candidates):
        raise ModelError(
            f"{source} has no (batch, tokens, {vocab}) logits output (outputs: "
            f"{[o.name for o in model.graph.output]}); SPLADE needs the masked-LM logits"
        )
    return (named or candidates)[0]


def _append_head(model: Any, vocab: int, pooling: str, activation: str, source: Path) -> Any:
    """Append mask, log(1 + ReLU) and pooling to a logits graph; its only output: ``weights``."""
    import onnx
    from onnx import TensorProto, helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 11:
        raise ModelError(f"{source} uses ONNX opset {opset}; SPLADE graphs need opset 11 or later")
    logits = _logits_output(model, vocab, source)
    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, value: Any, dtype: Any) -> str:
        inits.append(
            helper.make_tensor(
                f"splade/{name}",
                dtype,
                [len(value)] if isinstance(value, list) else [],
                value if isinstance(value, list) else [value],
            )
        )
        return f"splade/{name}"

    def node(op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        out = f"splade/{name}"
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def reduce(op: str, value: str, name: str) -> str:
        # Reduce ops moved their axes from an attribute to an input (ReduceSum at 13, the rest at 18).
        if opset >= (13 if op == "ReduceSum" else 18):
            return node(
                op, [value, const(f"{name}_axes", [1], TensorProto.INT64)], name, keepdims=0
            )
        return node(op, [value], name, axes=[1], keepdims=0)

    one = const("one", 1.0, TensorProto.FLOAT)
    zero = const("zero", 0.0, TensorProto.FLOAT)

    def log1p(value: str, name: str, *, exact: bool) -> str:
        u = node("Add", [value, one], f"{name}_u")
        if not exact:
            return node("Log", [u], name)
        # log(1 + x) keeps only the digits of x that survive in 1 + x (an absolute error up to
        # 6e-8); this form (log(u) * x / (u - 1)) keeps them all, as a library log1p does.
        d = node("Sub", [u, one], f"{name}_d")
        scaled = node(
            "Mul",
            [node("Log", [u], f"{name}_log"), node("Div", [value, d], f"{name}_ratio")],
            f"{name}_scaled",
        )
        return node("Where", [node("Equal", [d, zero], f"{name}_exact"), value, scaled], name)

    def activate(value: str, *, exact: bool) -> str:
        out = log1p(node("Relu", [value], "relu"), "log1p", exact=exact)
        return log1p(out, "log1p2", exact=exact) if activation == "log1p_relu" else out

    scores = logits.name
    if logits.type.tensor_type.elem_type != TensorProto.FLOAT:
        scores = node("Cast", [scores], "logits_float", to=TensorProto.FLOAT)
    mask = node("Cast", ["attention_mask"], "mask_float", to=TensorProto.FLOAT)
    if opset >= 13:
        mask = node("Unsqueeze", [mask, const("mask_axes", [2], TensorProto.INT64)], "mask")
    else:
        mask = node("Unsqueeze", [mask], "mask", axes=[2])
    if pooling == "max":
        # The transform never decreases, so it commutes with max: it runs on (batch, vocab) only,
        # where the exact log1p costs nothing.
        pooled = reduce("ReduceMax", node("Mul", [scores, mask], "masked"), "max")
        weights = activate(pooled, exact=True)
    else:
        # Per token, over (tokens x vocab): the plain form, five passes fewer. Its error (6e-8
        # per token) is far under the float32 noise of the logits themselves.
        weights = reduce(
            "ReduceSum", node("Mul", [activate(scores, exact=False), mask], "masked"), "sum"
        )
    nodes.append(helper.make_node("Identity", [weights], ["weights"], name="splade/weights"))
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    del model.graph.output[:]
    model.graph.output.append(
        helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["batch", vocab])
    )
    if _weight_bytes(model) < _PROTO_LIMIT:  # the checker cannot take a bigger message
        try:
            onnx.checker.check_model(model, full_check=False)
        except Exception as exc:  # onnx raises ValidationError and friends
            raise ModelError(f"cannot append the SPLADE head to {source}: {exc}") from exc
    return model


def _weight_bytes(model: Any) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def _write_headed(source: Path, target: Path, folder: SparseFolder) -> Path:
    """Read the logits graph at ``source``, append the head, write it to ``target`` atomically."""
    import onnx

    try:
        model = onnx.load(str(source))
    except Exception as exc:
        raise ModelError(f"cannot read ONNX graph {source}: {exc}") from exc
    model = _append_head(model, folder.vocab_size, folder.pooling, folder.activation, source)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=".partial-", suffix=".onnx")
    os.close(fd)
    tmp = Path(name)
    try:
        # Protobuf caps one message at 2 GiB: bigger graphs keep their weights beside them.
        big = _weight_bytes(model) >= _PROTO_LIMIT
        onnx.save_model(
            model,
            str(tmp),
            save_as_external_data=big,
            all_tensors_to_one_file=True,
            location=f"{target.name}.data",
        )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _graph(folder: SparseFolder, directory: Path, *, export: bool) -> Path | None:
    """The SPLADE graph in ``directory``: built from the folder's own logits graph, or exported
    from the torch weights (``export``); None when neither is possible."""
    from ._export import export_lock

    target = directory / GRAPH_NAME
    if target.is_file():
        return target
    if folder.onnx_path is None and not export:
        return None
    try:
        with export_lock(directory):
            if target.is_file():  # another process built it while we waited
                return target
            if folder.onnx_path is not None:
                log.info("appending the SPLADE head to %s into %s", folder.onnx_path, target)
                return _write_headed(folder.onnx_path, target, folder)
            log.warning(
                "exporting %s to ONNX at %s (once; later loads reuse it)", folder.path, target
            )
            logits = directory / ".logits.onnx"
            try:
                _export_logits(folder, logits)
                return _write_headed(logits, target, folder)
            finally:
                logits.unlink(missing_ok=True)
    except OSError as exc:  # an unwritable cache, a full disk
        raise ModelError(f"cannot write the SPLADE graph into {directory}: {exc}") from exc


# -- the int8 graph: kept only when the heaviest terms survive ----------------------------------


@dataclass(frozen=True, slots=True)
class Int8Check:
    """How well the int8 graph keeps each check text's heaviest terms (share of its top terms)."""

    mean_overlap: float
    min_overlap: float
    n_texts: int
    top: int

    @property
    def passed(self) -> bool:
        return self.mean_overlap >= MIN_MEAN_OVERLAP and self.min_overlap >= MIN_OVERLAP

    def describe(self) -> str:
        verdict = "passed" if self.passed else "failed"
        return (
            f"int8 check {verdict}: top-{self.top} term overlap with fp32 mean "
            f"{self.mean_overlap:.3f} (needs {MIN_MEAN_OVERLAP}), worst {self.min_overlap:.3f} "
            f"(needs {MIN_OVERLAP}) over {self.n_texts} texts"
        )


def top_overlap(
    reference: SparseVector, other: SparseVector, top: int = _CHECK_TOP
) -> float | None:
    """Share of ``reference``'s ``top`` heaviest terms that are among ``other``'s as many heaviest
    (None when ``reference`` has no terms)."""
    k = min(top, len(reference.indices))
    if k == 0:
        return None
    mine = set(reference.indices[np.argsort(-reference.values, kind="stable")[:k]].tolist())
    theirs = set(other.indices[np.argsort(-other.values, kind="stable")[:k]].tolist())
    return len(mine & theirs) / k


def _int8(model: SparseEmbedder, fp32: Path, directory: Path, threads: int | None) -> Path:
    """The checked int8 graph in ``directory``, quantising ``fp32`` first if needed."""
    from ._checkset import check_texts
    from ._export import export_lock, quantize_int8

    target = directory / INT8_NAME
    report = directory / CHECK_NAME
    if target.is_file() and report.is_file():
        return target
    with export_lock(directory):
        if target.is_file() and report.is_file():
            return target
        log.warning("quantising %s to int8 and checking its top terms", fp32)
        fd, name = tempfile.mkstemp(dir=directory, prefix=".partial-", suffix=".int8.onnx")
        os.close(fd)
        candidate = Path(name)
        try:
            quantize_int8(fp32, candidate)
            texts = check_texts(32)
            reference = model.embed(texts)
            quantized = model._with_engine(_OnnxEngine(candidate, threads)).embed(texts)
            shares = [
                s
                for a, b in zip(reference, quantized, strict=True)
                if a.sparse is not None and b.sparse is not None
                if (s := top_overlap(a.sparse, b.sparse)) is not None
            ]
            check = Int8Check(
                float(np.mean(shares)) if shares else 1.0,
                float(np.min(shares)) if shares else 1.0,
                len(shares),
                _CHECK_TOP,
            )
            log.warning("%s", check.describe())
            if not check.passed:
                raise ModelError(
                    f"int8 graph of {model.model_id} refused: {check.describe()}; use the fp32 model"
                )
            report.write_text(json.dumps({**asdict(check), "passed": True}))
            os.replace(candidate, target)
        except OSError as exc:
            raise ModelError(f"cannot write the int8 graph into {directory}: {exc}") from exc
        finally:
            candidate.unlink(missing_ok=True)
    return target


# -- the model ----------------------------------------------------------------------------------


def _tokenizer(path: Path) -> tokenizers.Tokenizer:
    try:
        tok = tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for bad files
        raise ModelError(f"cannot load tokenizer {path}: {exc}") from exc
    return tok


def _pad_id(tok: tokenizers.Tokenizer, config: dict[str, Any]) -> int:
    # The id the tokenizer pads with (RoBERTa-style models derive positions from it).
    padding = tok.padding
    if padding and isinstance(padding.get("pad_id"), int):
        return int(padding["pad_id"])
    if isinstance(config.get("pad_token_id"), int):
        return int(config["pad_token_id"])
    for name in ("[PAD]", "<pad>"):
        found = tok.token_to_id(name)
        if found is not None:
            return found
    return 0


class SparseEmbedder:
    """A loaded SPLADE model: texts in, one :class:`SparseVector` over the vocabulary per text.

    Safe to call from several threads at once. Build it with :func:`load_sparse` (or
    ``load_model(spec, kind="sparse")``).
    """

    kind = KIND

    def __init__(
        self,
        *,
        model_id: str,
        folder: SparseFolder,
        engine: _Engine,
        identity: str,
        quantized: bool = False,
        top_k: int | None = None,
        token_budget: int | None = None,
    ) -> None:
        self.model_id = model_id
        self.folder = folder
        self.path = folder.path
        self._engine = engine
        self.backend: str = engine.name
        self.quantized = quantized
        self.top_k = top_k
        self.dim: int = folder.vocab_size
        self.max_tokens: int = folder.max_tokens
        self.query_max_tokens: int = folder.query_max_tokens
        self.token_budget: int = token_budget or max(
            self.max_tokens, self.query_max_tokens, _LOGIT_BUDGET // max(self.dim, 1)
        )
        self.fingerprint: str = (
            f"{model_id}@{identity[:16]};kind={KIND};quantized={int(quantized)};top_k={top_k or 0}"
        )
        self.tokenizer_path: Path = folder.tokenizer_path
        base = _tokenizer(folder.tokenizer_path)
        config = _json_or_empty(folder.transformer_path / "config.json")
        self._pad = _pad_id(base, config)
        # tokenizer.json may carry its own truncation and padding; the limits are the model's
        # (sentence-transformers' rules), and batches are padded here.
        base.no_padding()
        base.no_truncation()
        self.tokenizer: tokenizers.Tokenizer = base
        self._documents = self._side(folder.max_tokens)
        self._queries = self._side(folder.query_max_tokens)
        # A document prompt is part of every document's window: chunkers subtract it too.
        prompt_tokens = len(base.encode(folder.document_prompt, add_special_tokens=False).ids)
        self.num_special_tokens: int = base.num_special_tokens_to_add(False) + (
            prompt_tokens if folder.document_prompt else 0
        )
        self._lock = threading.Lock()
        self.truncated_inputs = 0
        self.embedded_inputs = 0

    def _side(self, limit: int) -> tokenizers.Tokenizer:
        tok = _tokenizer(self.folder.tokenizer_path)
        tok.no_padding()
        tok.enable_truncation(max_length=limit)
        return tok

    def _with_engine(self, engine: _Engine) -> SparseEmbedder:
        """This model on another engine (the int8 check compares two graphs)."""
        import copy

        twin = copy.copy(self)
        twin._engine = engine
        twin.backend = engine.name
        twin._lock = threading.Lock()
        return twin

    @property
    def threads(self) -> int | None:
        return self._engine.threads

    def __repr__(self) -> str:
        return (
            f"SparseEmbedder({self.model_id!r}, kind={KIND!r}, backend={self.backend!r}, "
            f"dim={self.dim}, max_tokens={self.max_tokens}, quantized={self.quantized}, "
            f"top_k={self.top_k})"
        )

    # -- tokenising ---------------------------------------------------------------------------

    @staticmethod
    def _check_texts(texts: Iterable[object]) -> list[str]:
        if isinstance(texts, str):
            raise TypeError("pass an iterable of strings, not one string; wrap it in a list")
        items = list(texts)
        for i, text in enumerate(items):
            if not isinstance(text, str):
                raise TypeError(f"input {i} is {type(text).__name__}, not str")
        return items  # type: ignore[return-value]

    def _encode(
        self, tok: tokenizers.Tokenizer, prompt: str, limit: int, texts: Iterable[object]
    ) -> list[tokenizers.Encoding]:
        items = self._check_texts(texts)
        if not items:
            return []
        # As sentence-transformers does: the prompt is prepended to the text, lowercased when the
        # module says so, and the whole is truncated to the limit.
        prepared = [prompt + t for t in items] if prompt else items
        if self.folder.do_lower_case:
            prepared = [t.lower() for t in prepared]
        encodings = tok.encode_batch(prepared)
        truncated = sum(1 for e in encodings if e.overflowing)
        if truncated:
            with self._lock:
                self.truncated_inputs += truncated
                total = self.truncated_inputs
            log.warning(
                "%d of %d inputs exceed %d tokens and were truncated (%d since load)",
                truncated,
                len(items),
                limit,
                total,
            )
        return encodings

    def tokenize(self, texts: Sequence[str]) -> list[tokenizers.Encoding]:
        """Document-side encodings: prompt (if the model has one) and special tokens added,
        truncated to ``max_tokens`` (and counted)."""
        return self._encode(self._documents, self.folder.document_prompt, self.max_tokens, texts)

    def tokenize_queries(self, texts: Sequence[str]) -> list[tokenizers.Encoding]:
        """Query-side encodings (the query prompt, ``query_max_tokens``)."""
        return self._encode(self._queries, self.folder.query_prompt, self.query_max_tokens, texts)

    # -- embedding ----------------------------------------------------------------------------

    def embed(self, texts: Iterable[str]) -> list[Embedding]:
        """Documents: one sparse embedding per text, in input order."""
        return self.embed_tokenized(self.tokenize(self._check_texts(texts)))

    def embed_queries(self, texts: Iterable[str]) -> list[Embedding]:
        """Queries: symmetric SPLADE runs the same encoder (with the query prompt and limit)."""
        return self._run(self.tokenize_queries(self._check_texts(texts)), self.query_max_tokens)

    def embed_tokenized(self, encodings: Sequence[tokenizers.Encoding]) -> list[Embedding]:
        """Run encodings from :meth:`tokenize`; sorting and token-budget batching happen inside."""
        return self._run(encodings, self.max_tokens)

    def _run(self, encodings: Sequence[tokenizers.Encoding], limit: int) -> list[Embedding]:
        from ._embedder import pad_batch, token_budget_batches

        lengths = [len(e.ids) for e in encodings]
        for i, length in enumerate(lengths):
            if length > limit:
                raise ValueError(
                    f"encoding {i} has {length} tokens, more than the limit {limit}; build "
                    "encodings with tokenize(), which truncates"
                )
        out: list[Embedding | None] = [None] * len(encodings)
        for batch in token_budget_batches(lengths, self.token_budget):
            ids, mask, types = pad_batch(encodings, batch, self._pad)
            weights = self._engine.run(ids, mask, types)
            if weights.shape != (len(batch), self.dim):
                raise ModelError(
                    f"{self.model_id}: the {self.backend} engine returned shape {weights.shape}, "
                    f"expected ({len(batch)}, {self.dim})"
                )
            if not np.isfinite(weights).all():
                raise ModelError(f"{self.model_id}: the {self.backend} engine returned NaN or inf")
            for row, i in enumerate(batch):
                out[i] = Embedding(sparse=self._sparse(weights[row]))
        with self._lock:
            self.embedded_inputs += len(encodings)
        return [e for e in out if e is not None]

    def _sparse(self, row: np.ndarray) -> SparseVector:
        indices = np.flatnonzero(row > 0)
        if self.top_k is not None and len(indices) > self.top_k:
            keep = np.argpartition(row[indices], len(indices) - self.top_k)[-self.top_k :]
            indices = np.sort(indices[keep])
        return SparseVector(indices, row[indices], self.dim)


# -- loading ------------------------------------------------------------------------------------


def load_sparse(
    path: Path,
    model_id: str,
    *,
    backend: str | None = None,
    quantized: bool = False,
    threads: int | None = None,
    cache: Path,
    top_k: int | None = None,
    token_budget: int | None = None,
) -> SparseEmbedder:
    """Load a SPLADE folder.

    ``backend``: "onnx" (the folder's own logits graph with the head appended, one built earlier
    into ``cache``, or one exported now when torch is installed), "torch", or None (ONNX whenever
    a graph exists or can be exported). ``quantized``: the int8 graph, built on demand and kept
    only if each check text keeps its heaviest terms. ``top_k``: keep the k largest weights per
    text (default: the folder's ``max_active_dims``, else all). ``token_budget``: padded tokens per
    forward pass (default: about 2**25 logits per pass, at least one full window).
    """
    from ._backends import torch_available
    from ._export import export_dir
    from ._folder import files_identity

    if backend not in (None, "onnx", "torch"):
        raise ConfigError(f"backend must be 'onnx', 'torch' or None, got {backend!r}")
    if quantized and backend == "torch":
        raise ConfigError("quantized=True runs the int8 ONNX graph; it needs backend 'onnx'")
    for name, value in (("top_k", top_k), ("token_budget", token_budget)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigError(f"{name} must be a positive integer or None, got {value!r}")
    folder = read_sparse_folder(path)
    settings = (
        KIND,
        folder.pooling,
        folder.activation,
        folder.max_tokens,
        folder.query_max_tokens,
        folder.do_lower_case,
        folder.query_prompt,
        folder.document_prompt,
    )
    identity = files_identity(list(folder.identity_files), settings)
    directory = export_dir(cache, model_id, identity)
    keep = top_k if top_k is not None else folder.max_active_dims

    engine: _Engine
    graph: Path | None = None
    if backend != "torch":
        try:
            graph = _graph(folder, directory, export=torch_available())
        except (ModelError, MissingDependencyError) as exc:
            if backend == "onnx" or quantized or not torch_available():
                raise
            # Automatic mode: a failed export must not stop the user; torch still works.
            log.warning("SPLADE ONNX export failed (%s); using the torch backend", exc)
        if graph is None and (backend == "onnx" or quantized):
            raise ModelError(
                f"{model_id} has no ONNX graph (looked in {folder.transformer_path / 'onnx'} and "
                f"{directory}) and torch is not installed to export one: "
                "pip install 'vectorstream[torch]'"
            )
    engine = _OnnxEngine(graph, threads) if graph is not None else _TorchEngine(folder, threads)
    model = SparseEmbedder(
        model_id=model_id,
        folder=folder,
        engine=engine,
        identity=identity,
        top_k=keep,
        token_budget=token_budget,
    )
    if quantized:
        assert graph is not None  # checked above
        int8 = _int8(model, graph, directory, threads)
        model = SparseEmbedder(
            model_id=model_id,
            folder=folder,
            engine=_OnnxEngine(int8, threads),
            identity=identity,
            quantized=True,
            top_k=keep,
            token_budget=token_budget,
        )
    log.info("loaded %r", model)
    return model


__all__ = [
    "ACTIVATIONS",
    "POOLINGS",
    "Int8Check",
    "SparseEmbedder",
    "SparseFolder",
    "detect_sparse",
    "load_sparse",
    "read_sparse_folder",
    "top_overlap",
]
