"""A search worker: asks the study for trials and trains each as an ordinary run, until the budget is spent.

Each trial runs `accelerate launch cvae_dist/train.py` in its run folder, as slurm/sweep.sh runs a
grid point. While it trains, the worker reads the run's TensorBoard events (the tracker flushes
after every log) and reports each epoch's validation PSNR to the pruner. A trial the pruner stops
gets SIGUSR1, like a preemption: it checkpoints and exits with status 75, and is told PRUNED.

SIGUSR1 or SIGTERM to the worker (Slurm's warning before the time limit, a preemption) is passed on
to the training processes; once they have checkpointed, the worker exits with status 75 and leaves
its trial RUNNING, marked as awaiting its requeue: the requeued task finds it and resumes it.
"""

from __future__ import annotations

import enum
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import Trial, TrialState

from cvae_dist.config import current_name, parse_args
from cvae_dist.errors import UserError
from cvae_dist.events import ScalarFollower
from cvae_dist.search.space import MANAGED, Search
from cvae_dist.search.study import AWAITING_REQUEUE, HEARTBEAT, RUN, WORKER, fail_dead, has_work, open_study, others_alive, own_trial, worker_id
from cvae_dist.tracking import VAL

TRAIN_SCRIPT = Path(__file__).resolve().parents[1] / "train.py"
# cvae_dist.train's EXIT_REQUEUE and STATUS_FILE_ENV (tests check they agree); not imported, so that a
# worker, which waits on training for hours, does not load Accelerate and the training stack.
EXIT_REQUEUE = 75
STATUS_FILE_ENV = "CVAE_DIST_STATUS_FILE"
# Seconds between reads of a training run's events.
POLL_S = 2.0


class Outcome(enum.Enum):
    """How a trial's training ended, for the worker."""

    TOLD = "told"
    """The study was told its result (complete, pruned or failed)."""
    PREEMPTED = "preempted"
    """Stopped to be requeued: the trial stays RUNNING for this worker's requeue."""


@dataclass
class Launch:
    """How the worker starts training."""

    accelerate_config: str | None = None
    """`accelerate launch --config_file` (None: accelerate's own default config)."""
    main_process_port: int | None = None
    """`accelerate launch --main_process_port`, distinct for tasks that share a node."""
    extra_flags: list[str] = field(default_factory=list)
    """cvae_dist/train.py flags of every trial, from the command line (--DR, say)."""


def check_extra_flags(search: Search, flags: list[str]) -> None:
    """Command-line training flags: valid, and setting neither a searched setting nor one the search manages."""
    for token in flags:
        if token.startswith("--"):
            name = current_name(token[2:].split("=", 1)[0].removeprefix("no-"))
            if name in search.space:
                raise UserError(f"{token}: {name} is searched in {search.path}; it cannot be set for every trial")
            if name in MANAGED:
                raise UserError(f"{token}: the search sets {name} for each trial itself")
    parse_args(search.trial_flags({}) + flags)  # an unknown flag or a bad value: one error line now


class Worker:
    """One worker of a search: its study, its own trial, the training it runs."""

    def __init__(self, search: Search, root: Path, storage: optuna.storages.BaseStorage, launch: Launch):
        self.search, self.root, self.storage, self.launch = search, root, storage, launch
        self.me = worker_id()
        self.label = f"worker {self.me}" if self.me else "worker"
        self.stop_requested = False
        self.trainer: subprocess.Popen | None = None

    def run(self) -> int:
        """Train trials until the budget is spent (0), or until a stop signal (75: requeue me)."""
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._on_stop)
        task = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))
        study = open_study(self.search, self.storage)
        # Workers seed their samplers apart (by task, and by the trials so far, so that a requeued
        # worker does not propose its first trials again), or they would propose the same trials.
        study.sampler = self.search.make_sampler(1000 * task + len(study.get_trials(deepcopy=False)))
        own = own_trial(study, self.me)
        if own is not None:
            print(f"{self.label}: going on with its trial {own.number} ({own.user_attrs.get(RUN)})", flush=True)
            # Optuna makes Trial objects for ask(); one for a RUNNING trial is made the same way.
            if self._run_trial(study, Trial(study, own._trial_id)) is Outcome.PREEMPTED:
                return EXIT_REQUEUE
        while not self.stop_requested:
            fail_dead(study, self.search)
            if not has_work(study, self.search.n_trials):
                alive = others_alive(study, self.me)
                if not alive:
                    print(f"{self.label}: the budget of {self.search.n_trials} trials is spent", flush=True)
                    return 0
                # Stay until they end: if one's task is killed outright, its retry needs a worker.
                self._sleep(self.search.heartbeat_interval)
                continue
            if self._run_trial(study, study.ask()) is Outcome.PREEMPTED:
                return EXIT_REQUEUE
        return EXIT_REQUEUE

    def _on_stop(self, signum, frame) -> None:
        self.stop_requested = True
        print(f"{self.label}: {signal.Signals(signum).name}, asking training to save a checkpoint", file=sys.stderr, flush=True)
        self._signal_training()

    def _signal_training(self) -> None:
        """SIGUSR1 to the training processes: the launcher's children (`accelerate launch` dies of SIGUSR1 itself)."""
        if self.trainer is not None and self.trainer.poll() is None:
            subprocess.run(["pkill", "-USR1", "-P", str(self.trainer.pid)], check=False)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.stop_requested:
            time.sleep(min(1.0, end - time.monotonic()))

    def _run_trial(self, study: optuna.Study, trial: Trial) -> Outcome:
        run = trial.user_attrs.get(RUN) or f"trial-{trial.number:03d}"  # a retry goes on in the dead trial's folder
        folder = self.root / run
        for key, value in {RUN: run, WORKER: self.me, AWAITING_REQUEUE: False, HEARTBEAT: time.time()}.items():
            trial.set_user_attr(key, value)
        params = {name: suggest(trial, name, distribution) for name, distribution in self.search.space.items()}
        if self.stop_requested:  # stopped between asking and starting: the requeue starts it
            return self._preempted(trial)
        flags = [*self.search.trial_flags(params), *self.launch.extra_flags, "--save_root", str(folder)]
        resuming = any(folder.glob("checkpoints/checkpoint-*"))
        if resuming:
            flags += ["--resume_from_checkpoint", "latest"]
        print(f"trial {trial.number} in {folder}{' (resuming)' if resuming else ''}: {' '.join(flags)}", flush=True)
        reader = EpochReader(folder, known=set(study.get_trials(deepcopy=False)[trial.number].intermediate_values))
        status, pruned_at = self._train(trial, folder, flags, reader)
        epochs = reader.epochs
        if status == 0:
            if not epochs:
                print(f"trial {trial.number}: training logged no validation PSNR: failed", flush=True)
                study.tell(trial, state=TrialState.FAIL)
            else:
                value = max(epochs.values()) if self.search.objective == "best" else epochs[max(epochs)]
                study.tell(trial, value)
                print(f"trial {trial.number}: {self.search.objective} validation PSNR {value:.2f} dB", flush=True)
            return Outcome.TOLD
        if status == EXIT_REQUEUE and pruned_at is not None and not self.stop_requested:
            study.tell(trial, state=TrialState.PRUNED)
            print(f"trial {trial.number}: pruned after epoch {pruned_at}", flush=True)
            return Outcome.TOLD
        if status == EXIT_REQUEUE:
            return self._preempted(trial)
        trial.set_user_attr("exit_status", status)
        study.tell(trial, state=TrialState.FAIL)
        print(f"trial {trial.number}: training failed with exit status {status} (its log is above)", flush=True)
        return Outcome.TOLD

    def _preempted(self, trial: Trial) -> Outcome:
        self.stop_requested = True
        # Without a Slurm task to requeue, nobody would go on with it: let the heartbeat's grace period
        # pass it to another worker instead.
        trial.set_user_attr(AWAITING_REQUEUE, self.me is not None)
        print(f"trial {trial.number}: stopped with a checkpoint; it goes on when this task is requeued", flush=True)
        return Outcome.PREEMPTED

    def _train(self, trial: Trial, folder: Path, flags: list[str], reader: EpochReader) -> tuple[int, int | None]:
        """Run training to its end, reporting each epoch; returns its exit status and the epoch it was pruned at."""
        status_file = folder / "exit_status"
        status_file.unlink(missing_ok=True)  # never read an earlier run's status
        # --quiet: a trial stopped on purpose (pruned, preempted) exits with 75, which is no reason for the launcher's traceback.
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--quiet"]
        if self.launch.accelerate_config:
            launcher += ["--config_file", self.launch.accelerate_config]
        if self.launch.main_process_port:
            launcher += ["--main_process_port", str(self.launch.main_process_port)]
        env = {**os.environ, STATUS_FILE_ENV: str(status_file)}
        pruned_at = None
        with Heartbeat(trial, self.search.heartbeat_interval):
            self.trainer = subprocess.Popen([*launcher, str(TRAIN_SCRIPT), *flags], env=env)
            if self.stop_requested:  # a signal between the check and the start
                self._signal_training()
            while True:
                ended = self.trainer.poll() is not None
                epoch = reader.report(trial)
                if epoch is not None and pruned_at is None and not ended and trial.should_prune():
                    pruned_at = epoch
                    print(f"trial {trial.number}: the pruner stops it after epoch {epoch}", flush=True)
                    self._signal_training()
                if ended:
                    break
                time.sleep(POLL_S)
        status = self.trainer.returncode
        self.trainer = None
        # `accelerate launch` reports any failure as 1; the main training process wrote its own status.
        if status != 0 and status_file.is_file() and status_file.read_text().strip() not in ("", "0"):
            status = int(status_file.read_text())
        return status, pruned_at


class EpochReader:
    """A training run's validation PSNR per epoch (val/psnr), read from its TensorBoard events as they grow."""

    def __init__(self, folder: Path, known: set[int]):
        self.follower = ScalarFollower(folder, VAL.psnr)
        self.known = known
        """Epochs already reported to the trial (before a preemption, or by the trial a retry repeats)."""
        self.epochs: dict[int, float] = {}
        """epoch -> validation PSNR, every epoch the events hold (the latest write of each)."""

    def read(self) -> dict[int, float]:
        self.epochs = self.follower.read() or self.epochs
        return self.epochs

    def report(self, trial: Trial) -> int | None:
        """Report the epochs logged since the last call to the trial; returns the newest of them (None: nothing new)."""
        newest = None
        for epoch, psnr in sorted(self.read().items()):
            if epoch not in self.known:
                trial.report(psnr, epoch)
                self.known.add(epoch)
                newest = epoch
        return newest


def suggest(trial: Trial, name: str, distribution) -> object:
    """The trial's value of a searched setting (drawn by the sampler, or the one it already has)."""
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log, step=distribution.step)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, log=distribution.log, step=distribution.step)
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    raise TypeError(distribution)


class Heartbeat:
    """Records time.time() in the trial's user attributes every `interval` seconds, from a thread, while training runs."""

    def __init__(self, trial: Trial, interval: float):
        self.trial, self.interval = trial, interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="search-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    def _beat(self) -> None:
        while not self.done.wait(self.interval):
            try:
                self.trial.set_user_attr(HEARTBEAT, time.time())
            except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
                print(f"trial {self.trial.number} was failed by another worker (no heartbeat in its grace period?)", file=sys.stderr, flush=True)
                return
