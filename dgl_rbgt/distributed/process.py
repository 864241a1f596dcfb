"""What every DistDGL process started by ``dgl-rbgt launch`` does around its work.

Servers (:mod:`.server`) and trainers (:mod:`.trainer`) are separate entry points, so that a
server imports only DGL and the recipe schema, not the models and the training loop. Both log to
stdout (the launcher prefixes and collects it), print their Python stacks on ``kill -USR1 PID``,
report a user mistake in one line with exit status 2 and any other failure with its traceback,
and leave through ``os._exit``. This module imports neither DGL nor torch.
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Callable, NoReturn

from ..errors import EXIT_USER_ERROR, UserError
from ..utils.logs import log_to_stdout

__all__ = ["run_process"]


def run_process(role: str, description: str, body: Callable[[dict], int], argv: list[str] | None = None) -> NoReturn:
    """Parse ``--spec RUN/launch.json --rank N``, check that DistDGL started this process in
    ``role`` (``DGL_ROLE``), run ``body(spec)`` and exit with its status."""
    parser = argparse.ArgumentParser(prog=f"python -m dgl_rbgt.distributed.{role}", description=description)
    parser.add_argument("--spec", required=True, help="launch.json written by the launcher in the run directory")
    parser.add_argument("--rank", type=int, required=True, help=f"{role} id (for logs and ps)")
    args = parser.parse_args(argv)
    log_to_stdout()
    # `kill -USR1 PID` prints every thread's Python stack: the first thing to look at in a hang.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        dgl_role = os.environ.get("DGL_ROLE")
        if (dgl_role == "server") != (role == "server"):
            raise UserError(f"this is the DistDGL {role} entry point but DGL_ROLE={dgl_role!r}; start me through "
                            f"`dgl-rbgt launch`")
        try:
            spec = json.loads(Path(args.spec).read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"--spec {args.spec}: cannot read the launch spec ({exc}); start me through "
                            f"`dgl-rbgt launch`") from None
        code = body(spec)
    except UserError as exc:
        print(f"dgl-rbgt {role} {args.rank}: error: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
        code = EXIT_USER_ERROR
    except SystemExit as exc:  # a DistDGL server ends with sys.exit() once the trainers are done
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - report, then leave without atexit (see below)
        traceback.print_exc()
        code = 1
    # Leave without the interpreter's exit handlers: DistDGL registers one that waits in a barrier
    # for every other trainer, so a failed trainer would hang instead of exiting (and the launcher
    # would never learn of the failure); after success, DistDGL's exit already ran.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
