"""Session-wide test settings shared by every test module."""

from __future__ import annotations

import os
from pathlib import Path


def pytest_configure(config) -> None:  # type: ignore[no-untyped-def]
    # Never reach for a model hub from tests; everything runs offline.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # One cache of exported ONNX graphs for the whole run (and kept between runs), so the model
    # is exported once, not once per test module. Tests of the export itself use a private one.
    cache = Path(str(config.rootpath)) / ".pytest_cache" / "vectorstream-cache"
    os.environ.setdefault("VECTORSTREAM_CACHE_DIR", str(cache))
