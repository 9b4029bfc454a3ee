"""A real one-machine Slurm cluster for tests: munged, slurmctld and slurmd from Debian's packages,
configured by a generated slurm.conf in a temporary folder, on ports nobody else uses.

    with LocalSlurm(folder, cpus=4) as slurm:
        subprocess.run(["sbatch", "--wait", ...], env=slurm.env(base_env))

Run as a script, it keeps one up until interrupted, for sweeps run by hand (docs/experiments.md):

    python tests/local_slurm.py FOLDER [--cpus N]    # prints the SLURM_CONF to export

Needs root (slurmd starts jobs as their user) and the packages `slurm-wlm` and `munge`, which
`ensure_installed` installs with apt-get where they are missing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from support import REPO, free_port, run_env

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")
# The scripts ask for a GPU node's resources; a one-node CPU cluster grants none of them.
CPU_RESOURCES = ["--gres=none", "--cpus-per-task=1"]
# Job states after which a job does not run again.
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")


def unavailable_reason() -> str | None:
    """Why a local Slurm cannot be started here (None when it can), installing it if need be."""
    if os.geteuid() != 0:
        return "a local Slurm needs root (slurmd runs jobs as their user)"
    if all(shutil.which(d) or Path("/usr/sbin", d).exists() for d in (*DAEMONS, "sbatch")):
        return None
    if shutil.which("apt-get") is None:
        return "slurm-wlm and munge are not installed and there is no apt-get to install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], env=env, check=True, capture_output=True, timeout=900)
    return None


def _daemon(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin") / name)


class LocalSlurm:
    """munged + slurmctld + slurmd of one node named after this host, all under `folder`."""

    def __init__(self, folder: Path, cpus: int = 4):
        self.folder = Path(folder)
        self.cpus = cpus
        self.node = socket.gethostname()
        self.conf = self.folder / "slurm.conf"
        self.socket = self.folder / "munge" / "munge.socket"
        self.processes: list[subprocess.Popen] = []

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """Environment in which sbatch/srun/scontrol talk to this cluster."""
        return {**base, "SLURM_CONF": str(self.conf)}

    def __enter__(self) -> LocalSlurm:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start(self) -> None:
        munge = self.socket.parent
        munge.mkdir(parents=True, mode=0o700)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._spawn(
            "munged",
            [
                _daemon("munged"),
                "--foreground",
                "--force",
                f"--socket={self.socket}",
                f"--key-file={key}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={munge / 'munged.log'}",
                f"--seed-file={munge / 'munged.seed'}",
            ],
        )
        self._wait_for(self.socket.exists, "munged")
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir()
        self.conf.write_text(self._slurm_conf())
        self._spawn("slurmctld", [_daemon("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", [_daemon("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)])
        self._wait_for(self._node_idle, "slurmd to register as idle")

    def _slurm_conf(self) -> str:
        f = self.folder
        return "\n".join(
            [
                "ClusterName=cvaetest",
                f"SlurmctldHost={self.node}(127.0.0.1)",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"SlurmctldPort={free_port()}",
                f"SlurmdPort={free_port()}",
                # A requeued job may start again cred_expire + 1 s after it stopped (Slurm's default: 120 s).
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={self.socket},cred_expire=15",
                f"StateSaveLocation={f / 'state'}",
                f"SlurmdSpoolDir={f / 'spool'}",
                f"SlurmctldPidFile={f / 'slurmctld.pid'}",
                f"SlurmdPidFile={f / 'slurmd.pid'}",
                f"SlurmctldLogFile={f / 'slurmctld.log'}",
                f"SlurmdLogFile={f / 'slurmd.log'}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "MpiDefault=none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU",
                "SchedulerType=sched/backfill",
                "ReturnToService=2",
                # Declare `cpus` CPUs whatever the machine has, so small jobs run side by side.
                "SlurmdParameters=config_overrides",
                "AccountingStorageType=accounting_storage/none",
                "JobAcctGatherType=jobacct_gather/none",
                "JobCompType=jobcomp/none",
                "SchedulerParameters=sched_interval=1",
                # `sbatch --wait` polls its job every 2 s, then every 8, then every 32, as long as the interval is
                # below half of MinJobAge (300 s by default): a test would wait up to 32 s past a job's end.
                # 0 keeps every job's record (a test cluster's few) and the polling at 2 s.
                "MinJobAge=0",
                "MessageTimeout=30",
                f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=1000 State=UNKNOWN",
                "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )

    def _spawn(self, name: str, command: list[str]) -> None:
        log = (self.folder / f"{name}.stdout").open("wb")
        env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env))

    def _node_idle(self) -> bool:
        result = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env(dict(os.environ)), capture_output=True, text=True)
        return result.returncode == 0 and result.stdout.strip() == "idle"

    def _wait_for(self, ready, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [p.args[0] for p in self.processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"waiting for {what}: {'exited: ' + ', '.join(dead) if dead else 'timed out'}\n{self.logs()}")
            time.sleep(0.5)

    def exit_status(self, job: int) -> int | None:
        """The highest exit status the controller logged for `job`'s tasks (as `sbatch --wait` reports it), or None if it logged none."""
        ended = re.findall(rf"_job_complete: JobId={job}(?:_\d+)?(?:\(\d+\))? WEXITSTATUS (\d+)", (self.folder / "slurmctld.log").read_text())
        return max(map(int, ended)) if ended else None

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.folder.glob("*.log")) + sorted(self.folder.glob("*.stdout")))

    def stop(self) -> None:
        """Stop the daemons in reverse order of starting, each by its own process."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()


def slurm_env(slurm: LocalSlurm, **extra: str) -> dict[str, str]:
    """The user's environment at submission (run_env: the Python environment first on PATH), and the repository."""
    return slurm.env({**run_env(), "CVAE_DIST_DIR": str(REPO), **extra})


def scontrol_job(slurm: LocalSlurm, job: str) -> dict[str, str]:
    """`scontrol show job` as field -> value."""
    result = subprocess.run(["scontrol", "-o", "show", "job", job], env=slurm_env(slurm), capture_output=True, text=True, check=True)
    return dict(re.findall(r"(\w+)=(\S*)", result.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a one-node Slurm on this machine until interrupted.")
    parser.add_argument("folder", type=Path, help="where its configuration, state and logs go")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs the node offers (default: this machine's)")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"error: {reason}")
    args.folder.mkdir(parents=True, exist_ok=True)
    with LocalSlurm(args.folder, cpus=args.cpus) as slurm:
        print(f"export SLURM_CONF={slurm.conf}   # then sbatch, squeue; Ctrl-C (or kill) stops the cluster", flush=True)
        # Started with `&` from a script, the process inherits an ignored SIGINT: handle it here too.
        for stop in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop, signal.default_int_handler)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
