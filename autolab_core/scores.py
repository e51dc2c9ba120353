"""``lab-records/scores.tsv`` on main: one row per experiment, tab-separated."""

from __future__ import annotations

from typing import Any

from autolab_core.models import Experiment

SCORE_COLUMNS = (
    "id", "role", "status", "verdict", "value", "effect", "effect_err", "n_runs", "seed", "source", "title",
    "citation", "conversation", "base_commit", "branch", "commit", "eval_hash", "hardware",
    "train_s", "flags", "reason",
)


def _clean(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\t", " ").replace("\n", " ")


def score_row(exp: Experiment) -> dict[str, str]:
    result = exp.result
    return {
        "id": exp.id,
        "role": exp.role,
        "status": exp.status.value,
        "value": "" if result is None else f"{result.value:.6g}",
        "verdict": _clean(exp.verdict),
        "effect": "" if exp.effect is None else f"{exp.effect:+.4g}",
        "effect_err": "" if exp.effect_err is None else f"{exp.effect_err:.2g}",
        "n_runs": str(exp.n_runs),
        "seed": str(exp.seed),
        "source": exp.hypothesis.source,
        "title": _clean(exp.hypothesis.title),
        "citation": _clean(exp.hypothesis.citation),
        "conversation": _clean(exp.hypothesis.conversation_id),
        "base_commit": exp.base_commit[:12],
        "branch": exp.branch,
        "commit": (exp.commit or "")[:12],
        "eval_hash": (exp.eval_hash or "")[:12],
        "hardware": _clean(" ".join(f"{k}={v}" for k, v in sorted(exp.hardware.items()))),
        "train_s": "" if result is None or result.train_seconds is None
        else f"{result.train_seconds:.1f}",
        "flags": _clean(",".join(exp.flags)),
        "reason": _clean(exp.reason),
    }


def format_scores(rows: Any) -> str:
    lines = ["\t".join(SCORE_COLUMNS)]
    for row in sorted(rows, key=lambda r: r["id"]):
        lines.append("\t".join(_clean(row.get(c, "")) for c in SCORE_COLUMNS))
    return "\n".join(lines) + "\n"


def parse_scores(text: str) -> list[dict[str, str]]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return []
    header = lines[0].split("\t")
    return [dict(zip(header, ln.split("\t"), strict=False)) for ln in lines[1:]]
