"""The curated façade: every name in ``__all__`` resolves, and nothing public is left out."""

from __future__ import annotations

import subprocess
import sys
import types

import vectorstream


def test_all_names_resolve() -> None:
    for name in vectorstream.__all__:
        assert getattr(vectorstream, name) is not None, name


def test_all_is_sorted_and_complete() -> None:
    assert list(vectorstream.__all__) == sorted(vectorstream.__all__)
    public = {
        n
        for n in dir(vectorstream)
        if not n.startswith("_") and not isinstance(getattr(vectorstream, n), types.ModuleType)
    }
    assert public - {"TYPE_CHECKING", "Any", "annotations"} <= set(vectorstream.__all__)


def test_search_is_callable_even_after_the_subpackage_is_imported() -> None:
    import vectorstream.search as search_pkg

    assert callable(vectorstream.search)
    assert callable(search_pkg)


def test_import_is_light() -> None:
    """``import vectorstream`` must not pull in ONNX Runtime, LanceDB or torch."""
    code = (
        "import sys, vectorstream; "
        "print(','.join(m for m in ('onnxruntime', 'lancedb', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
