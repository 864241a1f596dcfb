"""``dgl-rbgt partition RECIPE`` and ``dgl-rbgt launch RECIPE``: the distributed commands.

:func:`add_subcommands` adds both to the main parser's subparsers; the handlers return the exit
status. User mistakes raise :class:`~dgl_rbgt.errors.UserError` (the main CLI prints one line and
exits 2); a failed job returns the launcher's status (the failed process's exit code, or 128 + its
signal).
"""
from __future__ import annotations

import sys

__all__ = ["add_subcommands", "cmd_partition", "cmd_launch"]


def cmd_partition(args) -> int:
    from ..config import load_distributed_recipe, partition_dir_of
    from .partition import format_report, partition

    recipe, dist = load_distributed_recipe(args.recipe, args.set)
    report = partition(recipe, dist, progress=not args.no_progress)
    print(format_report(report))
    print(f"{recipe.name}: {len(report['parts'])} partition(s) in {partition_dir_of(recipe, dist)}; "
          f"next: dgl-rbgt launch {args.recipe}")
    return 0


def cmd_launch(args) -> int:
    from ..config import load_distributed_recipe
    from .launcher import launch_recipe
    from .supervisor import describe_exit

    recipe, dist = load_distributed_recipe(args.recipe, args.set)
    result, rd = launch_recipe(recipe, dist, run_dir=args.run_dir, resume=args.resume)
    if result.interrupted:
        print(f"dgl-rbgt launch: interrupted ({result.interrupted}); every process stopped; resume with "
              f"--resume --run-dir {rd.path}", file=sys.stderr)
    elif result.failure is not None:
        f = result.failure
        print(f"dgl-rbgt launch: failed: {f.role} {f.rank} on host {f.host} ({describe_exit(f.exit_code)}, "
              f"pid {f.child_pid or f.pid}); every process stopped; resume with --resume --run-dir {rd.path}",
              file=sys.stderr)
    else:
        print(f"{recipe.name}: finished; run directory {rd.path}")
    return result.returncode


def add_subcommands(subparsers) -> None:
    """Add ``partition`` and ``launch`` to ``subparsers`` (from ``parser.add_subparsers()``)."""
    part = subparsers.add_parser(
        "partition", help="partition a recipe's graph for distributed training",
        description="Load the recipe's dataset and transforms, split the graph into one partition per "
                    "host listed in its distributed: section, and report sizes and edge cut.")
    part.add_argument("recipe", help="YAML recipe with a distributed: section")
    part.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                      help="override a recipe value (repeatable)")
    part.add_argument("--no-progress", action="store_true", help="no progress bars")
    part.set_defaults(func=cmd_partition)

    launch = subparsers.add_parser(
        "launch", help="train a recipe on DistDGL across its hosts",
        description="Start DistDGL servers and trainers on every host of the recipe's distributed: section "
                    "(ssh, or run_via), stream their logs, and stop all of them if one fails.")
    launch.add_argument("recipe", help="YAML recipe with a distributed: section (partitioned first)")
    launch.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a recipe value (repeatable)")
    launch.add_argument("--run-dir", default=None, help="write the run here (default: <output.root>/<name>-<time>)")
    launch.add_argument("--resume", action="store_true",
                        help="continue the run in --run-dir (default: the newest run of this recipe) from its checkpoint")
    launch.set_defaults(func=cmd_launch)
