"""Reports of benchmark results: a markdown table, a PNG plot, and the JSON + .md + .png trio ``--json OUT`` writes."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def markdown_table(payload: dict[str, Any], title: str | None = None) -> str:
    """The results as a markdown table (accuracy and CI in percent)."""
    lines = [f"### {title}", ""] if title else []
    lines += [f"Encoder: `{payload['encoder']}`", "",
              "| mode | method | way | shot | episodes | accuracy (%) | ± 95% CI | seconds |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in payload["results"]:
        lines.append(f"| {r['mode']} | {r['method']} | {r['way']} | {r['shot']} | {r['episodes']} | "
                     f"{100 * r['accuracy']:.2f} | {100 * r['ci95']:.2f} | {r['seconds']:.3f} |")
    opens = [r for r in payload["results"] if r["mode"] == "openset"]
    if opens:  # accuracy above is closed-set; the rejection columns are here
        lines += ["", "| method | shot | rejection | AUROC | accuracy (%) | accuracy with rejection (%) | "
                  "drop (points) | out-of-scope rejected (%) |", "|---|---:|---|---:|---:|---:|---:|---:|"]
        for r in opens:
            rule = f"{r.get('reject_score', '?')}, {r.get('reject_target', '?')} keep {r.get('keep', '?')}"
            lines.append(f"| {r['method']} | {r['shot']} | {rule} | {r['auroc']:.4f} | {100 * r['accuracy']:.2f} | "
                         f"{100 * r['accuracy_with_rejection']:.2f} | "
                         f"{100 * (r['accuracy'] - r['accuracy_with_rejection']):.2f} | "
                         f"{100 * r['oos_recall']:.1f} |")
    return "\n".join(lines) + "\n"


def plot_results(payload: dict[str, Any], path: str | os.PathLike, title: str | None = None) -> None:
    """PNG: one panel per few-shot mode, accuracy vs shots with 95% CI bars per method; zero-shot as a
    dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = payload["results"]
    panels = [m for m in ("episodic", "all", "openset") if any(r["mode"] == m for r in results)] or ["zero-shot"]
    zero = [r for r in results if r["mode"] == "zero-shot"]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(7.5, 5.5 * len(panels)), 4.2), squeeze=False)
    for ax, mode in zip(axes[0], panels):
        rows = [r for r in results if r["mode"] == mode]
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((r["shot"], r["accuracy"], r["ci95"]) for r in rows if r["method"] == method)
            xs, ys, es = zip(*pts)
            ax.errorbar(xs, [100 * y for y in ys], yerr=[100 * e for e in es], marker="o", capsize=4,
                        label=method)
        way = rows[0]["way"] if rows else None
        for z in (z for z in zero if z["way"] == way or not rows):   # same number of classes only
            ax.axhline(100 * z["accuracy"], ls="--", color="grey", label=f"zero-shot ({z['way']}-way)")
        if rows:
            way = rows[0]["way"]
            ax.set_xticks(sorted({r["shot"] for r in rows}))
            ax.set_title(f"{mode}: {way}-way" if mode == "episodic" else
                         f"open set, closed-set accuracy ({way})" if mode == "openset" else f"all classes ({way})")
        ax.set_xlabel("shots per class")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or payload["encoder"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(payload: dict[str, Any], json_path: str | os.PathLike, title: str | None = None) -> list[Path]:
    """Write OUT (JSON), OUT.md and OUT.png (suffix replaced). Returns the paths written."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    md, png = json_path.with_suffix(".md"), json_path.with_suffix(".png")
    md.write_text(markdown_table(payload, title), encoding="utf-8")
    plot_results(payload, png, title)
    return [json_path, md, png]


