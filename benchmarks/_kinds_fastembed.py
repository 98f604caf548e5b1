"""fastembed's ColBERT as a long-lived child of ``kinds.py`` (runs in fastembed's own venv).

    python _kinds_fastembed.py MODEL_DIR TEXTS_JSON THREADS

Loads ``LateInteractionTextEmbedding`` from the ONNX folder (offline: ``specific_model_path``),
prints one JSON line when ready, then answers one line per command on stdin, so the parent can
alternate it with the systems it runs itself:

- ``run``: embed every text (fastembed's own batching), answer ``{"wall_s", "cpu_s", "texts"}``;
- ``vectors PATH``: embed every text and save the token vectors to ``PATH`` (``np.savez``);
- ``quit``.

Only the standard library at the top: this file runs where vectorstream is not installed.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

# fastembed checks the model name against its catalogue; a 128-wide catalogued ColBERT whose
# files are replaced by ours through ``specific_model_path``.
MODEL_NAME = "colbert-ir/colbertv2.0"


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    model_dir, texts_path, threads = argv[1], argv[2], int(argv[3])
    with open(texts_path, encoding="utf-8") as handle:
        texts: list[str] = json.load(handle)
    start = time.perf_counter()
    try:
        from fastembed import LateInteractionTextEmbedding

        model = LateInteractionTextEmbedding(
            MODEL_NAME, specific_model_path=model_dir, threads=threads
        )
    except Exception as exc:
        _say({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    _say({"ready": True, "load_s": time.perf_counter() - start})
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        try:
            if command == "run":
                wall, cpu = time.perf_counter(), time.process_time()
                done = sum(1 for _ in model.embed(texts))
                _say(
                    {
                        "wall_s": time.perf_counter() - wall,
                        "cpu_s": time.process_time() - cpu,
                        "texts": done,
                    }
                )
            elif command == "vectors":
                import numpy as np

                vectors = [np.asarray(v, dtype=np.float32) for v in model.embed(texts)]
                np.savez(argument, *vectors)
                _say({"saved": argument, "texts": len(vectors)})
            elif command == "quit":
                break
            else:
                _say({"error": f"unknown command {command!r}"})
        except Exception as exc:
            _say({"error": f"{type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
