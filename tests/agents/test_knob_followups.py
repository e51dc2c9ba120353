"""The knob explorer after its first round: pushing a promoted direction, then pairs.

Histories are recorded experiments as the ledger keeps them (status history, verdict, effect).
"""

from __future__ import annotations

from autolab.agents.base import LabDigest
from autolab.agents.knobs import KnobExplorer
from autolab.agents.knobs.followups import next_step
from autolab_core.models import Direction, Experiment, ExperimentStatus, Hypothesis
from autolab_core.vocab import Role, Verdict

TRAIN = "INIT_STD = 0.04\nLR = 0.001\nWD = 0.1\nDROPOUT = 0.2\nSTEPS = 300\n"


def recorded(exp_id: str, title: str, changes: dict[str, object], *, base_code: str,
             verdict: str, effect: float | None = None, err: float | None = None) -> Experiment:
    exp = Experiment(id=exp_id, hypothesis=Hypothesis(id=exp_id, title=title, source="knob",
                                                      changes=changes),
                     base_commit="c", branch="", role=Role.CANDIDATE, base_code=base_code,
                     verdict=verdict, effect=effect, effect_err=err)
    return exp.with_status(ExperimentStatus.FINISHED)


def digest(files: dict[str, str], exps: list[Experiment], code: str) -> LabDigest:
    return LabDigest(metric="loss", direction=Direction.MINIMIZE, files=files, experiments=exps,
                     code_hash=code)


def test_after_a_promotion_the_next_step_in_the_same_direction_comes_first() -> None:
    # INIT_STD 0.02 -> 0.04 was promoted on the old main; main now has 0.04.
    history = [recorded("e1", "INIT_STD x2: 0.02 -> 0.04", {"INIT_STD": 0.04}, base_code="old",
                        verdict=Verdict.PROMOTED, effect=0.05, err=0.01)]
    ideas = KnobExplorer(editable=["train.py"]).propose(digest({"train.py": TRAIN}, history, "new"), 3)
    assert ideas[0].changes == {"INIT_STD": 0.08}
    assert "push" in ideas[0].title and "promoted" in ideas[0].rationale
    assert sum(h.changes == {"INIT_STD": 0.08} for h in ideas) == 1  # not proposed twice


def test_a_downward_win_is_pushed_down_and_a_stale_win_is_not_pushed() -> None:
    down = [recorded("e1", "LR /2: 0.002 -> 0.001", {"LR": 0.001}, base_code="old",
                     verdict=Verdict.PROMOTED)]
    ideas = KnobExplorer(editable=["train.py"]).propose(digest({"train.py": TRAIN}, down, "new"), 2)
    assert ideas[0].changes == {"LR": 0.0005}
    # Main has moved on from LR = 0.004 (a later change set it back to 0.001): no push.
    stale = [recorded("e1", "LR x2: 0.002 -> 0.004", {"LR": 0.004}, base_code="old",
                      verdict=Verdict.PROMOTED)]
    ideas = KnobExplorer(editable=["train.py"]).propose(digest({"train.py": TRAIN}, stale, "new"), 20)
    assert all("push" not in h.title for h in ideas)


def test_a_push_already_tried_on_this_main_is_not_repeated() -> None:
    history = [
        recorded("e1", "INIT_STD x2: 0.02 -> 0.04", {"INIT_STD": 0.04}, base_code="old",
                 verdict=Verdict.PROMOTED),
        recorded("e2", "INIT_STD push: 0.04 -> 0.08", {"INIT_STD": 0.08}, base_code="new",
                 verdict=Verdict.NOT_BETTER, effect=-0.001, err=0.01),
    ]
    ideas = KnobExplorer(editable=["train.py"]).propose(digest({"train.py": TRAIN}, history, "new"), 20)
    assert {"INIT_STD": 0.08} not in [h.changes for h in ideas]


def test_next_step_follows_scale_step_and_beta_moves() -> None:
    assert next_step(0.02, 0.04) == 0.08
    assert next_step(8, 16) == 32 and next_step(16, 8) == 4
    assert next_step(2, 3) == 4
    assert next_step(0.9, 0.95) == 0.975
    assert next_step(True, False) is None and next_step("gelu", "relu") is None


def singles_exhausted(code: str) -> list[Experiment]:
    """Every single move of every knob (narrowed steps too) ran on main ``code``; INIT_STD's
    were clearly worse."""
    files = {"train.py": TRAIN}
    explorer = KnobExplorer(editable=["train.py"])
    outcome = {"LR": (0.004, 0.01), "WD": (0.0, 0.01), "DROPOUT": (-0.005, 0.01),
               "INIT_STD": (-0.08, 0.01)}
    exps: list[Experiment] = []
    for _ in range(10):
        singles = [h for h in explorer.propose(digest(files, exps, code), 100) if len(h.changes) == 1]
        if not singles:
            return exps
        for h in singles:
            (name, _), = h.changes.items()
            effect, err = outcome[name]
            exps.append(recorded(f"s{len(exps)}", h.title, dict(h.changes), base_code=code,
                                 verdict=Verdict.NOT_BETTER, effect=effect, err=err))
    raise AssertionError("the explorer kept proposing singles")


def test_pairs_come_once_singles_are_exhausted_and_never_use_a_clearly_worse_knob() -> None:
    files = {"train.py": TRAIN}
    history = singles_exhausted("main")
    explorer = KnobExplorer(editable=["train.py"])
    ideas = explorer.propose(digest(files, history, "main"), 10)
    assert ideas, "pairs expected once every single was tried"
    assert all(len(h.changes) == 2 and h.title.startswith("pair: ") for h in ideas)
    assert all("INIT_STD" not in h.changes for h in ideas)  # its single was clearly worse
    assert {frozenset(h.changes) for h in ideas} == {
        frozenset({"LR", "WD"}), frozenset({"LR", "DROPOUT"}), frozenset({"WD", "DROPOUT"})}
    assert set(ideas[0].changes) == {"LR", "WD"}  # largest summed effect first
    patch = explorer.write_patch(ideas[0], files)["train.py"]
    assert patch.count("\n") == TRAIN.count("\n") and patch != TRAIN


def test_no_pairs_while_singles_remain_and_a_tried_pair_is_not_repeated() -> None:
    files = {"train.py": TRAIN}
    history = singles_exhausted("main")
    explorer = KnobExplorer(editable=["train.py"])
    # Singles on an older main do not count: on the new main, singles come first.
    fresh = explorer.propose(digest(files, history, "newer"), 4)
    assert all(len(h.changes) == 1 for h in fresh)
    first = explorer.propose(digest(files, history, "main"), 1)[0]
    ran = recorded("p1", first.title, dict(first.changes), base_code="main",
                   verdict=Verdict.NOT_BETTER, effect=0.0, err=0.01)
    again = explorer.propose(digest(files, [*history, ran], "main"), 10)
    assert first.changes not in [h.changes for h in again]
