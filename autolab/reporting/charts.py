"""PNG charts for terminals and papers (matplotlib, Agg backend, imported only here).

API: ``write_pngs(data: ReportData, out_dir) -> list[Path]`` writes ``leaderboard.png``,
``learning_curves.png``, ``gantt.png`` and ``promotions.png`` (each only when it has data).
``pip install 'autolab-ml[report]'`` provides matplotlib.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from autolab.reporting.report_data import ReportData
from autolab.reporting.svg import COLORS


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "PNG charts need matplotlib: pip install 'autolab-ml[report]' (or build the report "
            "without PNGs)"
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    tmp.replace(path)
    return path


def write_pngs(data: ReportData, out_dir: Path) -> list[Path]:
    plt = _pyplot()
    out_dir = Path(out_dir)
    written: list[Path] = []
    try:
        entries = [e for e in data.entries[: min(data.top, 25)] if e.effect is not None]
        if entries:
            fig, ax = plt.subplots(figsize=(8, 0.3 * len(entries) + 1.2))
            ys = range(len(entries))[::-1]
            ax.barh(list(ys), [e.effect for e in entries],
                    xerr=[e.uncertainty or 0.0 for e in entries],
                    color=["#16a34a" if (e.effect or 0) > 0 else "#dc2626" for e in entries])
            ax.set_yticks(list(ys), [f"{e.experiment_id} {e.title}"[:50] for e in entries],
                          fontsize=7)
            ax.axvline(0, color="#111827", lw=0.8)
            ax.set_xlabel(f"improvement in {data.metric} over main (± 1 se)")
            written.append(_save(fig, out_dir / "leaderboard.png"))
            plt.close(fig)
        if data.curves:
            fig, ax = plt.subplots(figsize=(8, 4))
            ys_all = sorted(y for _, _, pts in data.curves for _, y in pts if math.isfinite(y))
            for label, color, pts in data.curves:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, lw=1.2,
                        label=label[:40])
            if ys_all:
                lo = ys_all[int(0.02 * (len(ys_all) - 1))]
                hi = ys_all[int(0.98 * (len(ys_all) - 1))]
                if hi > lo:
                    pad = 0.05 * (hi - lo)
                    ax.set_ylim(lo - pad, hi + pad)
            ax.set_xlabel("step")
            ax.set_ylabel(data.curve_metric)
            ax.legend(fontsize=6, loc="upper right")
            written.append(_save(fig, out_dir / "learning_curves.png"))
            plt.close(fig)
        if data.segments:
            slots = sorted({s.slot for s in data.segments})
            t0 = min(s.start for s in data.segments)
            scale = 3600.0 if max(s.end for s in data.segments) - t0 > 7200 else 60.0
            fig, ax = plt.subplots(figsize=(10, 0.35 * len(slots) + 1.2))
            for i, slot in enumerate(slots):
                for kind, height in (("queued", 0.2), ("running", 0.7)):
                    segs = [s for s in data.segments if s.slot == slot and s.kind == kind]
                    if not segs:
                        continue
                    ax.broken_barh(
                        [((s.start - t0) / scale, (s.end - s.start) / scale) for s in segs],
                        (i - height / 2, height),
                        facecolors=["#cbd5e1" if kind == "queued" else COLORS[s.outcome]
                                    for s in segs],
                    )
            ax.set_yticks(range(len(slots)), slots, fontsize=7)
            ax.set_xlabel("hours" if scale == 3600.0 else "minutes")
            ax.set_title(f"worker utilisation {data.overall_use:.0%}", fontsize=9)
            written.append(_save(fig, out_dir / "gantt.png"))
            plt.close(fig)
        if data.main_line:
            fig, ax = plt.subplots(figsize=(8, 3))
            t0 = data.main_line[0][0]
            xs = [(t - t0) / 3600 for t, _ in data.main_line]
            ax.step(xs, [v for _, v in data.main_line], where="post", color="#2563eb")
            ax.plot(xs, [v for _, v in data.main_line], "o", color="#16a34a")
            ax.set_xlabel("hours")
            ax.set_ylabel(f"{data.metric} of main")
            written.append(_save(fig, out_dir / "promotions.png"))
            plt.close(fig)
    finally:
        plt.close("all")
    return written
