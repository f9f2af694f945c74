"""``fewshot serve``: an HTTP service over named engines (FastAPI + uvicorn, the ``serve`` extra).

``create_app`` builds the app (``fewshot.serve.app``); ``store`` holds the engines and their write-ahead journals
(``journal``), ``jobs`` the background refines, ``limits`` the 413 limits, ``metrics`` the Prometheus text."""
from __future__ import annotations

from fewshot.serve.app import create_app
from fewshot.serve.limits import Limits

__all__ = ["Limits", "create_app"]
