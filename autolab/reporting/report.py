"""``autolab report``: a Markdown summary, a self-contained HTML page and PNG charts.

API::

    build_report(out_dir, experiments, metrics=None, *, png=True, **collect_keywords)
        -> ReportFiles(markdown, html, pngs)
    render_html(data) -> str;  render_markdown(data, pngs=()) -> str

The numbers come from :func:`.report_data.collect` (same keywords); a lab on disk is reported
by :func:`autolab.reporting.lab.write_lab_report`.

The HTML page has no external reference at all (inline CSS, inline SVG, a few lines of inline
JavaScript to sort tables) and stays small for 10,000 experiments: the leaderboard shows the
``top`` entries, at most ``max_curves`` curves are drawn, and Gantt bars closer than a pixel are
merged. Element ids: ``summary``, ``leaderboard``, ``promotions``, ``curves``, ``gantt``,
``utilisation``, ``anomalies``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import attrs

from autolab.reporting import svg
from autolab.reporting.report_data import ReportData, collect
from autolab.reporting.summary import Entry
from autolab_core.models import Experiment
from autolab_core.vocab import Flag

MAX_ANOMALY_ROWS = 200


@attrs.frozen
class ReportFiles:
    markdown: Path
    html: Path
    pngs: tuple[Path, ...] = ()


# -- formatting ------------------------------------------------------------------------------
def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def _effect(e: Entry) -> str:
    if e.effect is None:
        return "-"
    unc = "" if e.uncertainty is None else f" ± {e.uncertainty:.2g}"
    return f"{e.effect:+.4g}{unc}"


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _best(d: ReportData) -> Entry | None:
    return d.entries[0] if d.entries else None


# -- HTML ------------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#111827;
background:#f9fafb}main{max-width:1100px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin:28px 0 8px}
.muted{color:#6b7280}.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:18px}table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6;cursor:pointer;user-select:none;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.chart{background:#fff;border:1px solid #e5e7eb;border-radius:8px}
.frame{fill:none;stroke:#d1d5db}.grid{stroke:#eef0f3}.tick{font-size:10px;fill:#6b7280}
.label{font-size:11px;fill:#374151}.bar.finished{fill:#16a34a}.bar.running{fill:#3b82f6}
.bar.pruned{fill:#f59e0b}.bar.failed{fill:#dc2626}.bar.cancelled{fill:#9ca3af}
.bar.queued{fill:#cbd5e1}.legend span{display:inline-block;margin:2px 12px 2px 0;font-size:12px}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
.flag{background:#fee2e2;color:#991b1b;border-radius:4px;padding:0 4px;font-size:12px}
.use{background:#e5e7eb;border-radius:3px;height:10px;width:160px;display:inline-block}
.use i{display:block;height:10px;background:#16a34a;border-radius:3px}
"""

_JS = """
(function(){
  function key(cell){var v=cell.getAttribute('data-v');if(v!==null){var n=parseFloat(v);
    return isNaN(n)?v:n;}return cell.textContent.trim();}
  document.querySelectorAll('table.sortable').forEach(function(table){
    var heads=table.querySelectorAll('thead th');
    heads.forEach(function(th,i){th.addEventListener('click',function(){
      var body=table.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
      var asc=th.getAttribute('data-dir')!=='asc';th.setAttribute('data-dir',asc?'asc':'desc');
      rows.sort(function(a,b){var x=key(a.cells[i]),y=key(b.cells[i]);
        if(x===y)return 0;return (x<y?-1:1)*(asc?1:-1);});
      rows.forEach(function(r){body.appendChild(r);});});});
  });
  document.body.setAttribute('data-ready','1');
})();
"""


def _td(value: Any, num: bool = False, sort: float | None = None) -> str:
    attr = "" if sort is None else f' data-v="{sort!r}"'
    cls = ' class="num"' if num else ""
    return f"<td{cls}{attr}>{escape(str(value))}</td>"


def _leaderboard_html(d: ReportData) -> str:
    rows = []
    for i, e in enumerate(d.entries[: d.top], 1):
        flags = " ".join(f'<span class="flag" title="{escape(f.reason)}">{escape(f.kind)}</span>'
                         for f in map(Flag.parse, e.flags))
        trust = "" if e.trusted else ' <span class="flag">untrusted</span>'
        rows.append(
            "<tr>" + _td(i, True, i) + _td(e.experiment_id) + _td(e.title)
            + _td(_f(e.value, 6), True, e.value)
            + _td(_effect(e), True, e.effect if e.effect is not None else -1e308)
            + _td(e.n_seeds, True, e.n_seeds) + _td(e.status)
            + f"<td>{flags}{trust}</td></tr>"
        )
    more = len(d.entries) - d.top
    note = (f'<p class="muted">Top {d.top} of {len(d.entries)} candidates with a result; the '
            f"Markdown and the metric store have the rest.</p>" if more > 0 else "")
    base = ("" if d.base_value is None else
            f'<p class="muted">Effect is the improvement in {escape(d.metric)} over main '
            f"({_f(d.base_value, 6)}, sigma {_f(d.base_sigma, 3)}), ± one standard error; "
            f"positive is better.</p>")
    return (f'<section id="leaderboard"><h2>Leaderboard</h2>{base}'
            '<table id="leaderboard-table" class="sortable"><thead><tr><th>#</th>'
            f'<th>experiment</th><th>hypothesis</th><th>{escape(d.metric)}</th><th>effect</th>'
            "<th>seeds</th><th>status</th><th>flags</th></tr></thead><tbody>"
            + "".join(rows) + f"</tbody></table>{note}</section>")


def _promotions_html(d: ReportData) -> str:
    rows = "".join(
        "<tr>" + _td(_when(p.at)) + _td(p.experiment_id) + _td(p.title)
        + _td(_f(p.value, 6), True, p.value) + _td((p.commit or "")[:10]) + "</tr>"
        for p in d.promotions
    )
    table = ("" if not d.promotions else
             '<table class="sortable"><thead><tr><th>when</th><th>experiment</th>'
             f"<th>hypothesis</th><th>{escape(d.metric)}</th><th>commit</th></tr></thead>"
             f"<tbody>{rows}</tbody></table>")
    chart = svg.step_chart(d.main_line, y_label=d.metric)
    return (f'<section id="promotions"><h2>Promotions ({len(d.promotions)})</h2>'
            f"{chart}{table}</section>")


def _curves_html(d: ReportData) -> str:
    legend = "".join(f'<span><i class="sw" style="background:{c}"></i>{escape(lbl)}</span>'
                     for lbl, c, _ in d.curves)
    chart = svg.line_chart(d.curves, y_label=d.curve_metric, svg_id="curves-svg")
    return (f'<section id="curves"><h2>Learning curves: {escape(d.curve_metric)}</h2>'
            f'{chart}<div class="legend">{legend}</div></section>')


def _gantt_html(d: ReportData) -> str:
    legend = "".join(f'<span><i class="sw" style="background:{c}"></i>{k}</span>'
                     for k, c in [*svg.COLORS.items(), ("queued", "#cbd5e1")])
    merged = sum(1 for s in d.segments if s.count > 1)
    note = (f'<p class="muted">Bars closer than a pixel are merged ({merged} merged bars).</p>'
            if merged else "")
    return (f'<section id="gantt"><h2>Experiments per worker slot</h2>'
            f'{svg.gantt_chart(d.segments)}<div class="legend">{legend}</div>{note}</section>')


def _utilisation_html(d: ReportData) -> str:
    rows = "".join(
        "<tr>" + _td(u.slot) + _td(u.runs, True, u.runs) + _td(_hours(u.busy_s), True, u.busy_s)
        + f'<td data-v="{u.fraction!r}"><span class="use"><i style="width:{u.fraction:.0%}">'
        f"</i></span> {u.fraction:.0%}</td></tr>"
        for u in d.slot_use
    )
    return (f'<section id="utilisation"><h2>Worker utilisation: {d.overall_use:.0%}</h2>'
            '<table class="sortable"><thead><tr><th>slot</th><th>runs</th><th>busy</th>'
            f"<th>utilisation</th></tr></thead><tbody>{rows}</tbody></table></section>")


def _anomalies_html(d: ReportData) -> str:
    shown = d.anomalies[:MAX_ANOMALY_ROWS]
    rows = "".join("<tr>" + _td(a.experiment_id) + f'<td><span class="flag">{escape(a.flag)}'
                   "</span></td>" + _td(a.reason) + _td("" if a.step is None else a.step, True)
                   + "</tr>" for a in shown)
    more = len(d.anomalies) - len(shown)
    note = f'<p class="muted">... and {more} more (see the Markdown).</p>' if more > 0 else ""
    return (f'<section id="anomalies"><h2>Anomalies ({len(d.anomalies)})</h2>'
            '<p class="muted">A flagged experiment is never promoted without a person.</p>'
            '<table class="sortable"><thead><tr><th>experiment</th><th>flag</th><th>reason</th>'
            f"<th>step</th></tr></thead><tbody>{rows}</tbody></table>{note}</section>")


def _runs_html(d: ReportData) -> str:
    rows = "".join("<tr>" + _td(i) + _td(role) + _td(seed, True, seed) + _td(_f(v, 6), True, v)
                   + _td(lvl) + "</tr>" for i, role, seed, v, lvl in d.runs)
    return (f'<section id="runs"><h2>Runs ({len(d.runs)} finished)</h2>'
            '<p class="muted">isolation: the sandbox each run ran in (bwrap, landlock or none; '
            "see docs/trust.md).</p>"
            '<table class="sortable"><thead><tr><th>experiment</th><th>role</th><th>seed</th>'
            f"<th>{escape(d.metric)}</th><th>isolation</th></tr></thead><tbody>{rows}"
            "</tbody></table></section>")


def _summary_html(d: ReportData) -> str:
    best = _best(d)
    total = sum(d.counts.values())
    cards = [("experiments", str(total))]
    cards += [(k, str(v)) for k, v in sorted(d.counts.items())]
    cards += [("promotions", str(len(d.promotions))),
              ("best effect", "-" if best is None else _effect(best)),
              ("utilisation", f"{d.overall_use:.0%}"),
              ("saved by pruning", _hours(d.saved_seconds)),
              ("sandbox", (d.isolation or "-").removeprefix("isolation: "))]
    body = "".join(f'<div class="card"><span class="muted">{escape(k)}</span><b>{escape(v)}</b>'
                   "</div>" for k, v in cards)
    return f'<section id="summary"><div class="cards">{body}</div></section>'


def render_html(d: ReportData) -> str:
    """The whole self-contained page."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{escape(d.title)}</title>'
        f"<style>{_CSS}</style></head><body><main>"
        f"<h1>{escape(d.title)}</h1>"
        f'<p class="muted">Generated {_when(d.generated_at)}. Decisive metric: '
        f"{escape(d.metric)} ({d.direction.value}).</p>"
        + _summary_html(d) + _leaderboard_html(d) + _promotions_html(d) + _curves_html(d)
        + _gantt_html(d) + _utilisation_html(d) + _runs_html(d) + _anomalies_html(d)
        + f"</main><script>{_JS}</script></body></html>"
    )


# -- Markdown --------------------------------------------------------------------------------
def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(d: ReportData, pngs: Sequence[Path] = ()) -> str:
    best = _best(d)
    lines = [f"# {d.title}", "",
             f"Generated {_when(d.generated_at)}. Decisive metric: `{d.metric}` "
             f"({d.direction.value}).", ""]
    total = sum(d.counts.values())
    counts = ", ".join(f"{v} {k}" for k, v in sorted(d.counts.items()))
    lines += [f"- Experiments: {total} ({counts or 'none'})",
              f"- Promotions: {len(d.promotions)}",
              f"- Best: {'-' if best is None else f'{best.experiment_id} ({_effect(best)})'}",
              f"- Main: {_f(d.base_value, 6)} (sigma {_f(d.base_sigma, 3)})",
              f"- Worker utilisation: {d.overall_use:.0%}; saved by pruning: "
              f"{_hours(d.saved_seconds)}",
              f"- Sandbox ({d.isolation or 'isolation: no finished runs yet'})", ""]
    lines += ["## Leaderboard", "",
              f"| # | experiment | hypothesis | {d.metric} | effect ± se | seeds | status | flags |",
              "|---:|---|---|---:|---:|---:|---|---|"]
    for i, e in enumerate(d.entries[: d.top], 1):
        lines.append(f"| {i} | {_cell(e.experiment_id)} | {_cell(e.title)} | {_f(e.value, 6)} "
                     f"| {_effect(e)} | {e.n_seeds} | {e.status} | "
                     f"{_cell(' '.join(Flag.parse(f).kind for f in e.flags))} |")
    if len(d.entries) > d.top:
        lines.append(f"\n({len(d.entries) - d.top} more candidates not shown.)")
    lines += ["", f"## Promotions ({len(d.promotions)})", ""]
    lines += [f"- {_when(p.at)}: {p.experiment_id} ({_cell(p.title)}) -> {_f(p.value, 6)}"
              + (f", commit {p.commit[:10]}" if p.commit else "") for p in d.promotions]
    lines += ["", "## Worker utilisation", "", "| slot | runs | busy | utilisation |",
              "|---|---:|---:|---:|"]
    lines += [f"| {_cell(u.slot)} | {u.runs} | {_hours(u.busy_s)} | {u.fraction:.0%} |"
              for u in d.slot_use]
    lines += ["", f"## Runs ({len(d.runs)} finished)", "",
              f"| experiment | role | seed | {d.metric} | isolation |", "|---|---|---:|---:|---|"]
    lines += [f"| {_cell(i)} | {role} | {seed} | {_f(v, 6)} | {lvl} |"
              for i, role, seed, v, lvl in d.runs]
    lines += ["", f"## Anomalies ({len(d.anomalies)})", ""]
    lines += [f"- {a.experiment_id}: **{a.flag}**: {_cell(a.reason)}" for a in d.anomalies]
    if pngs:
        lines += ["", "## Charts", ""]
        lines += [f"![{p.stem}]({p.name})" for p in pngs]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build_report(
    out_dir: Path,
    experiments: Sequence[Experiment],
    metrics: Any = None,
    *,
    png: bool = True,
    **kwargs: Any,
) -> ReportFiles:
    """Write ``report.md``, ``report.html`` and (with ``png``) PNG charts into ``out_dir``.

    Keyword arguments are those of :func:`collect`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = collect(experiments, metrics, **kwargs)
    pngs: tuple[Path, ...] = ()
    if png:
        from autolab.reporting.charts import write_pngs

        pngs = tuple(write_pngs(data, out_dir))
    md, html = out_dir / "report.md", out_dir / "report.html"
    _write(md, render_markdown(data, pngs))
    _write(html, render_html(data))
    return ReportFiles(md, html, pngs)

