"""``dgl-rbgt`` / ``python -m dgl_rbgt``: a thin entry point over recipes and the trainer.

User mistakes (bad recipes, missing files, unusable checkpoints) print one line and exit 2;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

from . import __version__
from .errors import EXIT_USER_ERROR, UserError
from .utils.logs import log_to_terminal

__all__ = ["main"]


def _cmd_train(args) -> int:
    from .config import load_recipe

    recipe = load_recipe(args.recipe, args.set)  # a missing file or bad YAML: no torch import yet
    from .train.pipeline import run_recipe, summary_line

    result = run_recipe(recipe, run_dir=args.run_dir, resume=args.resume, progress=not args.no_progress)
    print(summary_line(result.summary))
    return 0


def _cmd_datasets(args) -> int:
    from .data import data_root, list_datasets

    print(f"data root: {data_root(args.root)}  (set with --root, DGL_RBGT_DATA or a recipe's dataset.root)")
    rows = [(d.name, d.family, d.metric, "yes" if d.available else "no", d.location)
            for d in list_datasets(args.root)]
    header = ("name", "family", "metric", "here", "location")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _cmd_info(args) -> int:
    import dgl
    import numpy
    import torch

    cuda = torch.cuda.is_available()
    print(f"dgl-rbgt {__version__}")
    print(f"python   {platform.python_version()} ({sys.executable})")
    print(f"torch    {torch.__version__}   dgl {dgl.__version__}   numpy {numpy.__version__}")
    print(f"device   {'cuda: ' + torch.cuda.get_device_name(0) if cuda else 'cpu'} "
          f"(cuda available: {cuda}, dgl backend: {dgl.backend.backend_name})")
    print(f"threads  torch intra-op {torch.get_num_threads()}, cpu count {os.cpu_count()}")
    print(f"data     {os.environ.get('DGL_RBGT_DATA', '(DGL_RBGT_DATA unset: default cache folder)')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dgl-rbgt", description="Graph transformers for large graphs on DGL.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"dgl-rbgt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train a recipe", description="Train the model a YAML recipe describes.")
    train.add_argument("recipe", help="path to a YAML recipe, e.g. recipes/quickstart.yaml")
    train.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                       help="override a recipe value (repeatable), e.g. --set train.epochs=10")
    train.add_argument("--run-dir", default=None, help="write the run here (default: <output.root>/<name>-<time>)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --run-dir (default: the newest run of this recipe) from its checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(func=_cmd_train)

    ds = sub.add_parser("datasets", help="list loadable datasets and where they are read from")
    ds.add_argument("--root", default=None, help="data root to inspect")
    ds.set_defaults(func=_cmd_datasets)

    info = sub.add_parser("info", help="versions, device and threads")
    info.set_defaults(func=_cmd_info)

    from .distributed.cli import add_subcommands

    add_subcommands(sub)  # partition, launch
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log_to_terminal(args.verbose)
    try:
        return args.func(args)
    except UserError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message's layout
        print(f"dgl-rbgt: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("dgl-rbgt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
