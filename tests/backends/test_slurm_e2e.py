"""``autolab run`` on SLURM as a campus user runs it: nothing trains outside a SLURM job.

An unprivileged user (created by ``tests/slurm_cluster.py``) owns a toy lab in their home and
runs the real CLI. Its ``train.py`` refuses to run unless ``SLURM_JOB_ID`` is set and records
every run (inside or outside SLURM) in a file outside the lab. The run must promote the real
win (LR x2) with every training run inside a SLURM job, and the loop's waves go out as job
arrays. This needs the loop never to run a candidate's training on the orchestrator's host for a
remote backend (issue 14, point 1).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter

import pytest

from tests.slurm_cluster import LAB_USER, REPO, as_lab_user, require_cluster, user_dir
from tests.toylab import CONFIG, PREPARE, TRAIN

#: Point 1 of issue 14 (the run-split branch): backends say whether their jobs run on this
#: machine, and the loop never runs a remote candidate's training (its smoke check) here.
#: Until that lands, every candidate is rejected as "smoke run failed" by this script.

REFUSE = '''\
import os, sys
with open(os.environ["RUN_RECORD"], "a") as record:
    record.write((os.environ.get("SLURM_JOB_ID") or "outside") + " "
                 + os.environ.get("SLURM_ARRAY_JOB_ID", "-") + "\\n")
if not os.environ.get("SLURM_JOB_ID"):
    sys.exit("train.py: refusing to run outside a SLURM job (login nodes are for editing)")
'''


@pytest.mark.slurm
def test_autolab_run_promotes_a_win_with_no_run_outside_slurm() -> None:
    require_cluster()
    root = user_dir(f"e2e-{uuid.uuid4().hex[:8]}")
    record = root.parent / f"{root.name}-runs.txt"
    lab_dir = root / "lab"
    config = CONFIG.replace('[backend]\nname = "local"\n', (
        '[backend]\nname = "slurm"\n\n[backend.slurm]\npartition = "debug"\n'
        'cpus_per_task = 1\nmem = "512M"\npoll_interval_s = 0.5\narray = true\n'
    )).replace("noise_runs = 3", "noise_runs = 2").replace("confirm_runs = 2", "confirm_runs = 1")
    # The record file lies outside the job's tree, where a sandbox (bwrap, landlock) refuses
    # writes: this test measures where jobs run, so its jobs run unsandboxed.
    config = config.replace("[run]\n", f'[run]\nisolation = "none"\nenv = {{ RUN_RECORD = "{record}" }}\n', 1)
    setup = (
        "import sys; from pathlib import Path; from autolab_core.lab import Lab\n"
        "root = Path(sys.argv[1]); root.mkdir()\n"
        "(root / 'train.py').write_text(sys.argv[2]); (root / 'prepare.py').write_text(sys.argv[3])\n"
        "Lab.init(root, config_text=sys.argv[4])\n"
    )
    made = as_lab_user([sys.executable, "-c", setup, str(lab_dir), REFUSE + TRAIN,
                        PREPARE.format(noise=0.01, flat=False), config], cwd=REPO)
    assert made.returncode == 0, made.stderr
    proc = as_lab_user([sys.executable, "-m", "autolab", "run", "--lab", str(lab_dir), "-n", "2",
                        "-w", "3"], timeout=600, cwd=lab_dir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    lines = [line.split() for line in record.read_text().splitlines() if line.strip()]
    runs = [job for job, _array in lines]
    assert runs and "outside" not in runs, f"{runs.count('outside')} runs outside SLURM:\n{out}"
    # the loop hands a turn's ready experiments over in one submit_many: with array = true the
    # first turn's baselines run as tasks of one job array
    arrays = Counter(array for _job, array in lines if array != "-")
    assert arrays and max(arrays.values()) >= 2, f"no job array of 2 or more tasks: {lines}"
    owners = subprocess.run(["stat", "-c", "%U", str(record)], capture_output=True, text=True)
    assert owners.stdout.strip() == LAB_USER
    # the lab belongs to the lab user: git refuses another user's repository without this
    main_train = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(lab_dir), "show",
                                 "main:train.py"],
                                capture_output=True, text=True).stdout
    assert "LR = 0.02" in main_train, out  # the win was promoted onto main
