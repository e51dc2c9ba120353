"""The lab's LLM budget: every call's usage and cost, persisted, and a hard stop when spent.

:class:`BudgetedLLM` wraps any :class:`LLM`. Spend lives in ``<state_dir>/llm_spend.json`` so
it survives restarts. Once the spend reaches ``[budget] llm_usd`` every further call raises
:class:`BudgetExceeded`; the orchestrator then stops asking the LLM and says so. A single call
may overshoot by its own cost, since cost is known only after the answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autolab_core.atomic import write_atomic
from autolab_core.errors import BudgetExceeded, LLMError
from autolab_core.interfaces import LLM, Completion, Message, Usage

SPEND_FILE = "llm_spend.json"


class LLMLedger:
    """Tokens and USD spent on LLM calls, in one JSON file written atomically."""

    def __init__(self, state_dir: Path | str) -> None:
        self.path = Path(state_dir) / SPEND_FILE
        self.data: dict[str, Any] = {"spent_usd": 0.0, "calls": 0, "input_tokens": 0,
                                     "output_tokens": 0, "by_model": {}}
        if self.path.exists():
            try:
                self.data.update(json.loads(self.path.read_text()))
            except ValueError:
                raise LLMError(
                    f"{self.path} is corrupt; fix or delete it (it records the LLM spend)"
                ) from None

    @property
    def spent_usd(self) -> float:
        return float(self.data["spent_usd"])

    def charge(self, model: str, usage: Usage) -> None:
        d = self.data
        d["spent_usd"] = float(d["spent_usd"]) + usage.cost_usd
        d["calls"] = int(d["calls"]) + 1
        d["input_tokens"] = int(d["input_tokens"]) + usage.input_tokens
        d["output_tokens"] = int(d["output_tokens"]) + usage.output_tokens
        per = d["by_model"].setdefault(model, {"spent_usd": 0.0, "calls": 0})
        per["spent_usd"] += usage.cost_usd
        per["calls"] += 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(d, indent=1, sort_keys=True))


class BudgetedLLM(LLM):
    """``inner`` with its spend charged against ``limit_usd`` (None: record, never stop)."""

    name = "budgeted"
    description = "Wraps an LLM and charges its cost against [budget] llm_usd"

    def __init__(self, inner: LLM, limit_usd: float | None, state_dir: Path | str) -> None:
        super().__init__(inner.options, inner.context)
        self.inner = inner
        self.limit_usd = limit_usd
        self.ledger = LLMLedger(state_dir)

    @property
    def model(self) -> str:
        return str(getattr(self.inner, "model", self.inner.name))

    @property
    def exhausted(self) -> bool:
        return self.limit_usd is not None and self.ledger.spent_usd >= self.limit_usd

    def remaining_usd(self) -> float | None:
        return None if self.limit_usd is None else max(0.0, self.limit_usd - self.ledger.spent_usd)

    def check(self) -> str | None:
        return self.inner.check()

    def complete(
        self,
        messages: Sequence[Message],
        schema: Mapping[str, Any] | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Completion:
        if self.exhausted:
            raise BudgetExceeded(
                f"LLM budget spent: ${self.ledger.spent_usd:.4f} of [budget] llm_usd = "
                f"{self.limit_usd:g} on {self.ledger.data['calls']} calls; no more LLM calls. "
                f"Raise llm_usd in autolab.toml to continue (spend is kept in {self.ledger.path})"
            )
        try:
            completion = self.inner.complete(
                messages, schema, max_tokens=max_tokens, temperature=temperature
            )
        except LLMError as exc:
            usage = getattr(exc, "usage", None)
            if isinstance(usage, Usage) and (usage.input_tokens or usage.output_tokens):
                self.ledger.charge(self.model, usage)
            raise
        self.ledger.charge(completion.model or self.model, completion.usage)
        return completion

    def close(self) -> None:
        self.inner.close()
