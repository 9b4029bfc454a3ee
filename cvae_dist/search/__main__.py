"""`python -m cvae_dist.search SEARCH.yaml --count | --list | --work [train.py flags] | --summary` (see __init__)."""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

from cvae_dist.config import AT_LEAST_1, number
from cvae_dist.errors import ArgumentParser, UserError, run_command
from cvae_dist.search import require_optuna


def parse_command_line(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m cvae_dist.search",
        description=(
            "Hyperparameter search with Optuna: what a search file holds, a worker that trains its trials "
            "(slurm/search.sh runs one in every array task), and its results. Needs optuna (pip install -e '.[search]')."
        ),
        epilog="With --work, flags the search does not know go to every trial's cvae_dist/train.py (give --DR, for example).",
        allow_abbrev=False,  # an abbreviation must not take a training flag for one of these
    )
    parser.add_argument("search", help="search file (see slurm/searches/)")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--count", action="store_true", help="print the trial budget")
    action.add_argument("--list", action="store_true", help="print the budget, the space, the fixed settings, the objective, sampler and pruner")
    action.add_argument("--work", action="store_true", help="be a worker: train trials until the budget is spent (exit 75: requeue me)")
    action.add_argument("--summary", action="store_true", help="print the trials, best first, and write Optuna's figures under the root")
    parser.add_argument("--root", type=Path, help="folder of the trials' run folders and the journal (default: runs/<search file's stem>)")
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="an Optuna database URL (sqlite:///search.db, postgresql://...) instead of the journal file ROOT/optuna.journal",
    )
    parser.add_argument(
        "--accelerate_config", metavar="FILE", help="with --work: accelerate launch --config_file of each trial (default: accelerate's own)"
    )
    parser.add_argument(
        "--main_process_port", type=number(int, AT_LEAST_1), metavar="PORT", help="with --work: accelerate launch --main_process_port"
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    args, train_flags = parser.parse_known_args(argv)
    if train_flags and not args.work:
        raise UserError(f"unrecognized arguments: {' '.join(train_flags)} (training flags go with --work only)")
    args.train_flags = train_flags
    return args


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, parse_command_line, _run)


def _run(args: argparse.Namespace) -> int:
    optuna = require_optuna()
    # Optuna marks ask/tell helpers and the plots experimental: a note about its API, not about the run.
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    from cvae_dist.search.space import describe, load_search
    from cvae_dist.search.study import JOURNAL, load_existing, open_storage

    search = load_search(args.search)
    root = args.root or Path("runs") / search.name
    if args.count:
        print(search.n_trials)
    elif args.list:
        print(describe(search))
    elif args.summary:
        from cvae_dist.search.summary import summarise

        if args.storage is None and not (root / JOURNAL).is_file():
            raise UserError(f"{root}: no search there ({JOURNAL} is missing); give the --root its workers used")
        study = load_existing(search, open_storage(root, args.storage), str(args.storage or root))
        print(summarise(study, search, root), end="")
    else:
        from cvae_dist.search.worker import Launch, Worker, check_extra_flags

        check_extra_flags(search, args.train_flags)
        launch = Launch(args.accelerate_config or os.environ.get("ACCELERATE_CONFIG"), args.main_process_port, args.train_flags)
        return Worker(search, root, open_storage(root, args.storage), launch).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
