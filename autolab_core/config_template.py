"""The ``autolab.toml`` that :meth:`autolab_core.lab.Lab.init` writes when none is given."""

DEFAULT_CONFIG = """\
# autolab lab configuration. See `autolab --help` and docs/.
[lab]
name = ""

[run]
command = "python train.py"
time_limit = "30m"

[metric]
name = "val_bpb"
direction = "minimize"
source = "pattern"
pattern = '^val_bpb:\\s*([0-9.eE+-]+)'

[files]
editable = ["train.py"]
protected = []

[backend]
name = "local"

[backend.local]
workers = 1
"""
