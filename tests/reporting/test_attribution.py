"""`autolab report --attribution` on a small real lab: two promoted knob changes, their
ablations run by `autolab run` (the real CLI, the local backend, real git), and the share of
the total gain each carries.

The lab is the toy lab (tests/toylab.py) with a protected scorer in which both LR (optimum 0.04)
and WIDTH (optimum 16) matter: ``1 + 0.1 log2(LR/0.04)^2 + 0.05 log2(WIDTH/16)^2 + noise``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from autolab.reporting.attribution import attribute, render_markdown
from autolab_core.lab import Lab
from tests.toylab import CONFIG, PREPARE, TRAIN

SCORER = PREPARE.replace(
    'loss += random.Random(seed)',
    'loss += 0 if FLAT else 0.05 * math.log2(model["width"] / 16) ** 2\n    loss += random.Random(seed)')


def autolab(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "autolab", *args], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def two_knob_lab(root: Path) -> Lab:
    root.mkdir(parents=True)
    (root / "train.py").write_text(TRAIN)
    (root / "prepare.py").write_text(SCORER.format(noise=0.005, flat=False))
    return Lab.init(root, config_text=CONFIG.replace(
        'focus = ["LR"]', 'exclude = ["LR", "WIDTH", "ACT", "USE_BIAS"]  # only queued ideas run'))


def test_attribution_of_two_promotions_through_the_cli(tmp_path: Path) -> None:
    lab = two_knob_lab(tmp_path / "lab")
    root = str(lab.root)
    for change in ("LR=0.02", "WIDTH=16"):  # one after the other: WIDTH is tried on LR's main
        autolab("try", "--lab", root, change)
        autolab("run", "--lab", root, "--workers", "2", "--max-experiments", "1", "--strategy", "knob")
    main_train = lab.read(lab.main_commit(), "train.py")
    assert "LR = 0.02" in main_train and "WIDTH = 16" in main_train, main_train

    first = autolab("report", "--lab", root, "--attribution", "--queue")
    assert "Gain attribution (val_bpb)" in first.stdout
    table = attribute(Lab(lab.root))
    knobs = {row.knob: row for row in table.rows}
    assert set(knobs) == {"LR", "WIDTH"}
    assert (knobs["LR"].revert_to, knobs["WIDTH"].revert_to) == ("0.01", "8")
    # Reverting the later promotion gives the code main had before it: its runs exist already.
    assert knobs["WIDTH"].runs >= 1 and knobs["WIDTH"].carried is not None
    # The earlier one's ablation (LR back to 0.01 with WIDTH 16) is new code: queued.
    assert knobs["LR"].runs == 0 and f"queued: ablation of {knobs['LR'].experiment}" in first.stdout
    inbox = [json.loads(line) for line in (lab.state_dir / "inbox.jsonl").read_text().splitlines()]
    assert [h["changes"] for h in inbox] == [{"LR": 0.01}]

    autolab("run", "--lab", root, "--workers", "2", "--max-experiments", "1", "--strategy", "knob")
    second = autolab("report", "--lab", root, "--attribution")
    table = attribute(Lab(lab.root))
    rows = {row.knob: row for row in table.rows}
    assert all(row.runs >= 1 and row.carried is not None for row in rows.values()), second.stdout
    assert rows["LR"].carried > 0.2 and rows["WIDTH"].carried > 0.02  # type: ignore[operator]
    assert rows["LR"].carried > rows["WIDTH"].carried  # type: ignore[operator]
    assert table.total_gain is not None and table.total_gain > 0.25
    assert 0.6 < (rows["LR"].share or 0) < 1.1
    assert render_markdown(table) in second.stdout
    assert (lab.state_dir / "report" / "attribution.md").read_text() == render_markdown(table)
