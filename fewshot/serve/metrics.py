"""``GET /metrics``: Prometheus text exposition (format 0.0.4), written by hand: requests and errors per route,
method and status, and a latency histogram per route. Routes are the path templates (``/v1/engines/{engine}``),
so the number of series stays bounded."""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.errors: dict[tuple[str, str], int] = defaultdict(int)
        self.histograms: dict[tuple[str, str], list[int]] = {}
        self.sums: dict[tuple[str, str], float] = defaultdict(float)
        self.started = time.time()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, method, str(status))] += 1
            if status >= 400:
                self.errors[(route, str(status))] += 1
            counts = self.histograms.setdefault((route, method), [0] * (len(BUCKETS) + 1))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
                    break
            else:
                counts[-1] += 1
            self.sums[(route, method)] += seconds

    def render(self, gauges: dict[str, tuple[str, float]] | None = None) -> str:
        out: list[str] = []
        with self._lock:
            out += ["# HELP fewshot_http_requests_total HTTP requests answered, by route, method and status.",
                    "# TYPE fewshot_http_requests_total counter"]
            for (route, method, status), n in sorted(self.requests.items()):
                out.append(f'fewshot_http_requests_total{{route="{_label(route)}",method="{method}",'
                           f'status="{status}"}} {n}')
            out += ["# HELP fewshot_http_errors_total HTTP answers with status >= 400, by route and status.",
                    "# TYPE fewshot_http_errors_total counter"]
            for (route, status), n in sorted(self.errors.items()):
                out.append(f'fewshot_http_errors_total{{route="{_label(route)}",status="{status}"}} {n}')
            out += ["# HELP fewshot_http_request_duration_seconds Time from request to the end of the answer.",
                    "# TYPE fewshot_http_request_duration_seconds histogram"]
            for (route, method), counts in sorted(self.histograms.items()):
                labels = f'route="{_label(route)}",method="{method}"'
                running = 0
                for bound, n in zip(BUCKETS, counts):
                    running += n
                    out.append(f'fewshot_http_request_duration_seconds_bucket{{{labels},le="{bound}"}} {running}')
                running += counts[-1]
                out.append(f'fewshot_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {running}')
                out.append(f"fewshot_http_request_duration_seconds_sum{{{labels}}} {self.sums[(route, method)]:.6f}")
                out.append(f"fewshot_http_request_duration_seconds_count{{{labels}}} {running}")
        for name, (help_text, value) in sorted((gauges or {}).items()):
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(out) + "\n"


class MetricsMiddleware:
    """Times every HTTP request and records it under its route template (``-`` when no route matched)."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def recording_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "-"
            self.metrics.observe(path, scope.get("method", "-"), status, time.perf_counter() - start)
