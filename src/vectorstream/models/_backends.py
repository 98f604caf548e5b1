"""Inference backends: token ids in, token states (batch, seq, hidden) out.

Pooling and everything after it live in ``_pooling`` and are shared, so the backends differ only in
the engine that computes token states. Both are safe to call from several threads at once: ONNX
Runtime's ``InferenceSession.run`` and a torch module in inference mode hold no per-call state.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import MissingDependencyError, ModelError
from ._threads import available_cores

log = logging.getLogger("vectorstream.models.backends")


class Backend(Protocol):
    name: str
    device: str

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray
    ) -> np.ndarray: ...


class OnnxBackend:
    """ONNX Runtime on CPU with a deliberate thread setup.

    Intra-op threads = the cores this process may use (or ``threads``); inter-op 1, because a
    transformer graph is a chain; spinning off, so threads waiting between batches do not burn the
    cores that parsing and chunking need.
    """

    name = "onnx"
    device = "cpu"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.path = path
        self.threads = threads if threads and threads > 0 else available_cores()
        self._session = onnx_session(path, self.threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._inputs
        if missing:
            raise ModelError(f"ONNX graph {path} lacks inputs {sorted(missing)}")
        outputs = self._session.get_outputs()
        if len(outputs[0].shape) != 3:
            raise ModelError(
                f"ONNX graph {path}: first output {outputs[0].name!r} must be token states "
                f"(batch, sequence, hidden), got shape {outputs[0].shape}"
            )
        self._output = outputs[0].name
        log.debug("ONNX session on %s with %d threads", path, self.threads)

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray
    ) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = token_type_ids
        try:
            (states,) = self._session.run([self._output], feed)
        except Exception as exc:
            raise ModelError(f"ONNX Runtime failed on {self.path}: {exc}") from exc
        return np.asarray(states)

    def with_threads(self, threads: int) -> OnnxBackend:
        """Another session on the same graph with its own intra-op thread count.

        A session's thread count is fixed when it is created; a service that runs concurrent
        batches on single-threaded sessions keeps one more session, on every core, for a request
        that arrives alone (lower latency). It holds its own copy of the weights.
        """
        if threads == self.threads:
            return self
        return OnnxBackend(self.path, threads)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the graph on disk: about what one more session costs in memory."""
        return _file_bytes(self.path)


def torch_runtime(threads: int | None) -> tuple[Any, str]:
    """torch and the device every kind's torch path runs on (CUDA when available).

    torch's thread count is process-wide, so it is set only when the caller asked for a number.
    Raises ``MissingDependencyError`` without torch.
    """
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch") from exc
    if threads and threads > 0:
        torch.set_num_threads(threads)
    return torch, "cuda" if torch.cuda.is_available() else "cpu"


def torch_inputs(
    torch: Any, device: str, ids: np.ndarray, mask: np.ndarray, types: np.ndarray, with_types: bool
) -> dict[str, Any]:
    """The keyword inputs of a transformers model on ``device``; token types only when it takes
    them (:func:`accepts_token_types`)."""
    kwargs = {
        "input_ids": torch.from_numpy(ids).to(device),
        "attention_mask": torch.from_numpy(mask).to(device),
    }
    if with_types:
        kwargs["token_type_ids"] = torch.from_numpy(types).to(device)
    return kwargs


def accepts_token_types(model: Any) -> bool:
    """Whether a transformers model's ``forward`` takes ``token_type_ids``.

    Read from its signature: transformers 5 wraps ``forward`` in decorators, so the wrapper's own
    code object no longer names the arguments.
    """
    import inspect

    try:
        return "token_type_ids" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def onnx_session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with vectorstream's thread setup (see :class:`OnnxBackend`).

    Every model kind runs its graphs through this. Raises ``ModelError`` when onnxruntime is
    missing or the graph does not load.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:  # a core dependency, so no extra to name
        raise ModelError("onnxruntime is not installed: pip install onnxruntime") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads if threads and threads > 0 else available_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # A memory pattern plans one block for a run's intermediates from the shapes seen before;
    # batch shapes vary here, so the patterns only pile up (a ColBERT ingest's model process grew
    # 240 MiB from one repeated shape) and cost time: MiniLM on 60 varied batches ran as fast or
    # faster without them (BENCHMARKS.md).
    options.enable_mem_pattern = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # ORT's own warnings go to stderr, not our logs
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises its own pybind classes for every failure
        raise ModelError(f"cannot load ONNX graph {path}: {exc}") from exc


def _file_bytes(path: Path) -> int:
    try:
        total = path.stat().st_size
        # External data (graphs over 2 GB) sits beside the graph file.
        data = path.with_name(path.name + ".data")
        if data.is_file():
            total += data.stat().st_size
        return total
    except OSError:
        return 0


class TorchBackend:
    """transformers' AutoModel under ``torch.inference_mode``; CUDA when available."""

    name = "torch"

    def __init__(self, folder: Path, threads: int | None = None, device: str | None = None) -> None:
        try:
            from transformers import AutoModel
        except ImportError as exc:
            raise MissingDependencyError("torch", "torch") from exc
        self._torch, default_device = torch_runtime(threads)
        self.device = device or default_device
        try:
            with quiet_transformers():
                model: Any = AutoModel.from_pretrained(str(folder))
        except Exception as exc:  # transformers raises OSError/ValueError/... for bad folders
            raise ModelError(f"transformers cannot load {folder}: {exc}") from exc
        self._model = model.to(self.device).eval()
        self._accepts_types = accepts_token_types(self._model)

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray
    ) -> np.ndarray:
        torch = self._torch
        kwargs = torch_inputs(
            torch, self.device, input_ids, attention_mask, token_type_ids, self._accepts_types
        )
        try:
            with torch.inference_mode():
                out = self._model(**kwargs)
        except RuntimeError as exc:
            raise ModelError(f"torch forward pass failed: {exc}") from exc
        return out[0].float().cpu().numpy()

    def with_threads(self, threads: int) -> TorchBackend:
        """Itself: torch's thread count is process-wide, so another copy would gain nothing."""
        return self

    weight_bytes = 0


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' weight-loading progress bar: the library never prints."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def torch_available() -> bool:
    import importlib.util

    return (
        importlib.util.find_spec("torch") is not None
        and importlib.util.find_spec("transformers") is not None
    )


__all__ = ["Backend", "OnnxBackend", "TorchBackend", "quiet_transformers", "torch_available"]
