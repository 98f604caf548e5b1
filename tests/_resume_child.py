"""Child process for kill-and-resume tests: ingest a corpus with a slow deterministic embedder."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    corpus, store, workers, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    try:
        # Imports inside the try: on a loaded machine a Ctrl-C can land while they run.
        from _pipeline_support import FakeEmbedder
        from vectorstream.pipeline import ingest

        report = ingest(
            [corpus], store=store, model=FakeEmbedder(delay=delay), workers=workers, buffer=64
        )
    except KeyboardInterrupt:  # before the pipeline started: nothing was written
        sys.exit(130)
    sys.exit(report.exit_code)
