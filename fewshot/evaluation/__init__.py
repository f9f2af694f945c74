"""Evaluation beside the run-time path: episode sampling and scoring (episodes), the benchmark runner
(bench) and its reports (reports)."""
from __future__ import annotations
