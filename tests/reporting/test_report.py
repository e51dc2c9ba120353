"""``autolab report``: Markdown, self-contained HTML and PNGs from a synthetic lab whose
curves live in a real parquet metric store."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from autolab.metrics.parquet_store import ParquetMetricStore
from autolab.reporting.anomalies import Anomaly
from autolab.reporting.report import build_report, render_html
from autolab.reporting.report_data import collect
from autolab.reporting.synthetic import synthetic_curve, synthetic_lab
from autolab_core.testing import make_context


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("lab")
    experiments = synthetic_lab(240, slots=4, seed=3)
    store = ParquetMetricStore({}, make_context(root))
    for e in experiments:
        store.append(synthetic_curve(e, 120, ("train_loss", "tok_per_s")))
    store.flush()
    return experiments, store


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_report_files_sections_and_self_containment(lab, tmp_path: Path) -> None:
    experiments, store = lab
    extra = [Anomaly(experiments[5].id, "divergence", "train_loss diverged at step 400", 400)]
    files = build_report(tmp_path / "out", experiments, store, title="toy lab", top=20,
                         anomalies=extra, now=experiments[-1].history[-1].at + 60)
    html = files.html.read_text()
    for section in ("summary", "leaderboard", "promotions", "curves", "gantt", "utilisation",
                    "anomalies"):
        assert f'id="{section}"' in html
    for chart in ("gantt-svg", "curves-svg", "promotions-svg", "leaderboard-table"):
        assert f'id="{chart}"' in html
    # nothing is fetched: no URL, no external script, stylesheet or image
    assert not re.search(r"https?://|\ssrc=|<link[^>]+stylesheet|url\(", html)
    assert html.count("<tr><td class=\"num\" data-v=") == 20  # leaderboard top 20
    assert html.count("<polyline") >= 5  # baseline median plus candidates
    assert "train_loss diverged at step 400" in html and "crash_oom" in html

    md = files.markdown.read_text()
    assert md.startswith("# toy lab")
    board = [ln for ln in md.splitlines() if re.match(r"^\| \d+ \|", ln)]
    assert len(board) == 20
    assert "## Promotions" in md and "## Anomalies" in md and "## Worker utilisation" in md
    assert {p.name for p in files.pngs} == {"leaderboard.png", "learning_curves.png",
                                            "gantt.png", "promotions.png"}
    for p in files.pngs:
        width, height = png_size(p)
        assert width > 300 and height > 100
        assert f"]({p.name})" in md


def test_report_numbers_match_the_lab(lab) -> None:
    experiments, store = lab
    data = collect(experiments, store, top=10)
    promoted = [e for e in experiments if any(f.startswith("promoted") for f in e.flags)]
    assert [p.experiment_id for p in data.promotions] == [e.id for e in promoted]
    assert len(data.main_line) == len(promoted) + 1  # main's first baseline, then each promotion
    assert sum(data.counts.values()) == len(experiments)
    effects = [e.effect for e in data.entries if e.effect is not None]
    assert effects == sorted(effects, reverse=True)
    assert 0.5 < data.overall_use <= 1.0
    assert {u.slot for u in data.slot_use} == {f"worker-{i}" for i in range(4)}
    assert data.curves[0][0] == "main (baseline median)"


def test_ten_thousand_experiments_stay_usable() -> None:
    experiments = synthetic_lab(10_000, seed=1)
    html = render_html(collect(experiments, None, top=50))
    assert len(html) < 2_000_000
    assert html.count("<rect") < 6_000  # Gantt bars merged below a pixel, never hidden
    assert html.count("<tr><td class=\"num\" data-v=") == 50
    assert "merged bars" in html


def test_empty_lab_renders(tmp_path: Path) -> None:
    files = build_report(tmp_path, [], None, png=True)
    html = files.html.read_text()
    assert "no runs yet" in html and "no promotions yet" in html and files.pngs == ()
