"""A child process that opens a store as its writer and keeps it open (tests of other processes).

    python _hold_store.py URI COLLECTION hold     open with mode "w", write 5 records, then wait
    python _hold_store.py URI COLLECTION write    write the server tests' corpus (fake model),
                                                  then keep upserting, a filler record a round

It prints ``ready`` once the store is open and written, and stops when its stdin closes (or when
it is killed); a failure is printed to stderr and ends it with status 1.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> int:
    uri, collection, what = sys.argv[1:4]
    from vectorstream.stores import open_store
    from vectorstream.types import Embedding, Record

    stop = threading.Event()
    # The parent closes our stdin (or dies) to stop us.
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    if what == "hold":
        from _servers_support import make_records

        store = open_store(uri, collection, dim=4, mode="w")
        store.upsert(make_records(5, dim=4))
        print("ready", flush=True)
        stop.wait()
        store.close()
        return 0

    from _server_support import CORPUS, FakeEmbedder, corpus_records

    model = FakeEmbedder()
    store = open_store(uri, collection, dim=model.dim, mode="w")
    corpus = corpus_records(model, CORPUS)
    store.upsert(corpus)
    store.side_table("manifest").put_many({"corpus": {"state": "done", "rounds": 0}})
    print("ready", flush=True)
    rounds = 0
    while not stop.is_set():
        rounds += 1
        text = f"zebra quartz filler number {rounds}"
        filler = Record(
            id=f"filler#{rounds}",
            embedding=Embedding(dense=model.embed([text])[0]),
            text=text,
            source="filler",
            chunk_index=rounds,
            start=0,
            end=len(text),
            model=model.model_id,
        )
        store.upsert([*corpus, filler])
        store.side_table("manifest").put_many({"corpus": {"state": "done", "rounds": rounds}})
        time.sleep(0.02)
    store.close()
    return 0


@contextlib.contextmanager
def held(uri: str, collection: str, what: str = "hold") -> Iterator[subprocess.Popen[bytes]]:
    """Run this script as a child holding ``uri`` open as a writer; stop it on exit."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, __file__, uri, collection, what],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
        try:
            assert proc.stdout is not None and proc.stdin is not None
            if proc.stdout.readline().strip() != b"ready":
                proc.wait(timeout=60)
                err.seek(0)
                raise RuntimeError(
                    f"the child failed to open {uri}:\n{err.read().decode()[-3000:]}"
                )
            yield proc
            alive = proc.poll() is None
            proc.stdin.close()
            code = proc.wait(timeout=60)
            err.seek(0)
            assert alive and code == 0, err.read().decode()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


if __name__ == "__main__":
    sys.exit(main())
