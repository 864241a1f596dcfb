#!/usr/bin/env python
"""Launch a recipe on DistDGL (a thin wrapper over ``dgl-rbgt launch``).

    tools/in-venv python tools/launch.py partition recipes/distributed/quickstart_local.yaml
    tools/in-venv python tools/launch.py recipes/distributed/quickstart_local.yaml [--resume] [--set k=v]

Unlike DGL's own tools/launch.py (not in the wheel, always ssh, no failure handling), this starts
local hosts as subprocesses, remote ones over ssh (or a recipe's ``run_via``), prefixes every log
line with ``[host role rank]``, and stops every process when one fails or on Ctrl-C.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from dgl_rbgt.cli import main  # noqa: E402

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] not in ("partition", "launch", "-h", "--help", "-v", "--verbose"):
        args = ["launch", *args]
    sys.exit(main(args))
