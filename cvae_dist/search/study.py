"""The study that a search's workers share: its storage, its budget, whose trial is whose, and dead trials.

Optuna's own heartbeat (RDBStorage's `heartbeat_interval` and `grace_period`) is recorded only by
`Study.optimize`, and Optuna's journal storage has none; a worker here must leave a preempted trial
RUNNING for its requeued task to go on with, which `optimize` cannot (it fails the trial), so workers
use ask and tell, and record a heartbeat of their own in the trial's user attributes. A RUNNING trial
whose heartbeat is older than the search's grace period (its task was killed outright) is failed by
the next worker that looks, and retried by Optuna's retry callback, which enqueues the same settings
with the dead trial's attributes, its run folder among them: the retry resumes from its checkpoint.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from cvae_dist.errors import UserError
from cvae_dist.search.space import Search

# Under the search's root: the journal of every trial (Optuna's file backend locks it for each write,
# with a lock that works over NFS).
JOURNAL = "optuna.journal"
# Trial user attributes: the run folder (relative to the root), the worker running it, when that
# worker last showed it was alive, and whether it stopped to be requeued (its task goes on with it).
RUN, WORKER, HEARTBEAT, AWAITING_REQUEUE = "run", "worker", "heartbeat", "awaiting_requeue"
# Study user attributes: what the search is (see Search.identity), and that its first trials are enqueued.
IDENTITY, READY = "search", "ready"
# How long a worker waits for the worker that created the study to enqueue the file's first trials.
READY_WAIT_S = 60
# Optuna 4.9 renamed RetryFailedTrialCallback (kept as a deprecated alias).
RetryCallback = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback


def open_storage(root: Path, url: str | None) -> optuna.storages.BaseStorage:
    """A database `url` (sqlite:///..., postgresql://...), or by default the journal file under `root`."""
    if url is not None:
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as err:  # a bad URL, a missing driver, a database that does not answer
            raise UserError(f"--storage {url}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    root.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(root / JOURNAL)))


def open_study(search: Search, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """The search's study: created (with the file's enqueued trials) by the first worker, loaded by the others."""
    sampler, pruner = search.make_sampler(), search.make_pruner()
    try:
        study = optuna.create_study(storage=storage, study_name=search.name, direction="maximize", sampler=sampler, pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=search.name, sampler=sampler, pruner=pruner)
        _wait_until_ready(study)
        _check_identity(study, search)
        return study
    study.set_user_attr(IDENTITY, search.identity())
    for params in search.enqueue:
        study.enqueue_trial(params)
    study.set_user_attr(READY, True)
    return study


def load_existing(search: Search, storage: optuna.storages.BaseStorage, where: str) -> optuna.Study:
    """The search's study for reading (--summary); a UserError when no worker has started it."""
    try:
        study = optuna.load_study(storage=storage, study_name=search.name)
    except KeyError:
        raise UserError(f"{where}: no study {search.name!r} there yet (start workers with slurm/search.sh)") from None
    _check_identity(study, search)
    return study


def _wait_until_ready(study: optuna.Study) -> None:
    deadline = time.monotonic() + READY_WAIT_S
    while not study.user_attrs.get(READY) and time.monotonic() < deadline:
        time.sleep(0.5)


def _check_identity(study: optuna.Study, search: Search) -> None:
    recorded = study.user_attrs.get(IDENTITY)
    if recorded is None:
        return
    differ = [key for key, value in search.identity().items() if recorded.get(key) != value]
    if differ:
        raise UserError(
            f"{search.path}: its study {search.name!r} in this storage was started with another {' and '.join(differ)}; give another --root"
        )


def worker_id() -> str | None:
    """This worker's name, which a requeue of its Slurm task keeps: `<array job>_<task>`, or the job id."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def own_trial(study: optuna.Study, worker: str | None) -> FrozenTrial | None:
    """The RUNNING trial this worker left when it was stopped for a requeue, if any."""
    if worker is None:
        return None
    mine = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.user_attrs.get(WORKER) == worker]
    return mine[-1] if mine else None


def spent(study: optuna.Study) -> int:
    """Trials of the budget spent or on their way: every trial but a dead one that was retried (its retry counts)."""
    trials = study.get_trials(deepcopy=False)
    retried = {number for t in trials for number in retry_history(t)}
    return sum(1 for t in trials if not (t.state == TrialState.FAIL and t.number in retried))


def retry_history(trial: FrozenTrial) -> list[int]:
    """The trials that `trial` retries, first the original (Optuna's retry callback records them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # a note about Optuna's API, not the search
        return RetryCallback.retry_history(trial)


def has_work(study: optuna.Study, n_trials: int) -> bool:
    """Whether a worker should ask for a trial: budget left, or a trial waiting (enqueued, or a retry)."""
    return spent(study) < n_trials or bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def others_alive(study: optuna.Study, worker: str | None) -> list[int]:
    """RUNNING trials of other workers that are not waiting for a requeue: one may yet die and need a retry."""
    return [
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get(WORKER) != worker or worker is None
        if not t.user_attrs.get(AWAITING_REQUEUE)
    ]


def fail_dead(study: optuna.Study, search: Search, now: float | None = None) -> list[int]:
    """Fail every RUNNING trial without a heartbeat for the grace period and have Optuna's callback
    retry it; returns their numbers. Two workers may find the same one: only the first fails it."""
    now = time.time() if now is None else now
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryCallback(max_retry=search.max_retry, inherit_intermediate_values=True)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(AWAITING_REQUEUE):
            continue
        last = trial.user_attrs.get(HEARTBEAT) or trial.datetime_start.timestamp()
        if now - last <= search.grace_period:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            continue  # another worker failed it (or its own worker finished it) first
        print(
            f"trial {trial.number} ({trial.user_attrs.get(RUN)}, worker {trial.user_attrs.get(WORKER)}): no heartbeat for "
            f"{now - last:.0f} s (grace period {search.grace_period} s): failed; retried unless it was retried {search.max_retry} times",
            flush=True,
        )
        retry(study, study.get_trials(deepcopy=False)[trial.number])
        failed.append(trial.number)
    return failed
