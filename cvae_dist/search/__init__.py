"""Hyperparameter search with Optuna, run as a Slurm array of workers beside the sweep grids.

    python -m cvae_dist.search SEARCH.yaml --count      the trial budget
    python -m cvae_dist.search SEARCH.yaml --list       the space, the fixed settings, objective, sampler, pruner
    python -m cvae_dist.search SEARCH.yaml --work [train.py flags]   one worker: trains trials until the budget is spent
    python -m cvae_dist.search SEARCH.yaml --summary    the best trials as a table, and Optuna's figures

`slurm/search.sh` runs `--work` in every task of an array job; `slurm/searches/` holds the search
files (`space.py` says what they hold). Every trial is an ordinary run folder under the search's
root (`<root>/trial-<number>`), trained by `accelerate launch cvae_dist/train.py` as a sweep point
is, so `tb_summary`, `report`, resuming and evaluation work on it. The trials of all workers share
one Optuna storage: by default a journal file under the root (`optuna.journal`), which needs no
server and works on a shared file system; `--storage URL` takes a database instead.

optuna is an optional dependency (`pip install -e '.[search]'`): every module of this package but
this one and `__main__` imports it, so `__main__` calls `require_optuna` before it imports them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from cvae_dist.errors import UserError

INSTALL_HINT = "pip install -e '.[search]' (or pip install 'optuna>=4')"


def require_optuna() -> ModuleType:
    """The optuna module, or a UserError that says how to install it."""
    try:
        return importlib.import_module("optuna")
    except ImportError:
        raise UserError(f"a search needs optuna, which is not installed: {INSTALL_HINT}") from None
