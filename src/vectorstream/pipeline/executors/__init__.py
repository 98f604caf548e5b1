"""Executors drive the stages: ``local`` (processes, threads, bounded queues on one machine)."""

from __future__ import annotations

from .local import LocalRun, default_workers

__all__ = ["LocalRun", "default_workers"]
