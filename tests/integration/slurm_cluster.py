"""A throwaway single-node Slurm (munged + slurmctld + slurmd) on localhost, for tests marked ``slurm``.

Everything lives in one run folder: slurm.conf, state, spool, logs, pid files and a private munge socket
on free ports, so it neither needs nor disturbs a system Slurm. Commands reach it through ``SLURM_CONF``.
Daemons are stopped by the PIDs in their pid files, never by name. Needs root (the daemons run as root,
munged as the munge user); installs ``slurm-wlm`` and ``munge`` with apt-get when they are missing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGES = ("slurm-wlm", "munge")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "sinfo", "scancel")
MUNGE_KEY = Path("/etc/munge/munge.key")


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def ensure_installed() -> None:
    """Install Slurm and munge with apt-get when missing; skip the calling test when that is impossible."""
    if all(shutil.which(b) for b in BINARIES):
        return
    if os.geteuid() != 0:
        pytest.skip("slurm tests: slurm-wlm/munge are not installed and installing them needs root")
    if not shutil.which("apt-get"):
        pytest.skip("slurm tests: slurm-wlm/munge are not installed and there is no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        result = _run(cmd, env=env, timeout=600)
        if result.returncode:
            pytest.skip(f"slurm tests: `{' '.join(cmd)}` failed: {result.stderr.strip()[-500:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _stop_by_pid_file(pid_file: Path, timeout: float = 10.0) -> None:
    """SIGTERM the process named in ``pid_file``, SIGKILL it if it outlives ``timeout`` seconds."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


class LocalSlurm:
    """One node (this host, all its cores) in one default partition ``debug``.

    Requeued jobs restart fast: ``cred_expire=10`` and a scheduler pass every 2 s (Slurm's defaults are
    120 s and 60 s); ``KillWait=5`` shortens the SIGTERM-to-SIGKILL grace.

    Args:
        root: the run folder (created; must be traversable by the munge user).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = socket.gethostname().split(".")[0]
        self.munge_dir = root / "munge"
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_conf(self) -> None:
        memory_mb = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20 // 2
        r = self.root
        lines = [
            "ClusterName=seedasrtest",
            f"SlurmctldHost={self.host}",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_dir / 'munge.socket'},cred_expire=10",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=2,bf_interval=2",
            "MpiDefault=none",
            "ReturnToService=2",
            "KillWait=5",
            "MailProg=/bin/true",
            f"NodeName={self.host} CPUs={os.cpu_count()} RealMemory={memory_mb} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _start_munge(self) -> None:
        if not MUNGE_KEY.exists():
            subprocess.run(["mungekey", "--create"], check=True)
            shutil.chown(MUNGE_KEY, "munge", "munge")
        self.munge_dir.mkdir()
        self.munge_dir.chmod(0o755)  # clients need to reach the socket
        shutil.chown(self.munge_dir, "munge", "munge")
        d = self.munge_dir
        subprocess.run(
            ["runuser", "-u", "munge", "--", "munged", f"--socket={d / 'munge.socket'}",
             f"--pid-file={d / 'munged.pid'}", f"--log-file={d / 'munged.log'}",
             f"--seed-file={d / 'munged.seed'}"],
            check=True, capture_output=True, text=True,
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start munged, slurmctld and slurmd; wait until the node is idle."""
        self.root.chmod(0o755)  # the munge user must reach its socket folder
        (self.root / "state").mkdir()
        (self.root / "spool").mkdir()
        self._write_conf()
        self._start_munge()
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon], env=self.env, check=True, capture_output=True, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.command("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
            if state == "idle":
                return
            time.sleep(0.2)
        raise RuntimeError(f"local slurm: node not idle after {timeout} s ({state!r}); see {self.root}")

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel every job, wait for the queue to drain, stop the daemons by their pid files."""
        if (self.root / "slurmctld.pid").exists():
            self.command("scancel", "--full", f"--user={os.getuid()}", check=False)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.command("squeue", "-h", check=False).stdout.strip():
                time.sleep(0.5)
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            _stop_by_pid_file(self.root / pid_file)

    def command(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster."""
        result = _run(list(args), env=self.env, timeout=60)
        if check and result.returncode:
            raise RuntimeError(f"`{' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def sbatch(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
        """Submit a batch job; returns its id."""
        result = _run(["sbatch", "--parsable", *args], env={**self.env, **(env or {})}, cwd=cwd, timeout=60)
        if result.returncode:
            raise RuntimeError(f"sbatch {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (``JobState``, ``Restarts``, ``ExitCode``, ...)."""
        out = self.command("scontrol", "show", "job", "-o", job_id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the slurmctld and slurmd logs, for failure messages."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.root / name
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            parts.append(f"\n--- {name} ---\n" + "\n".join(text))
        return "".join(parts)

    def wait(self, job_id: str, states: set[str], timeout: float) -> dict[str, str]:
        """Poll the job until its state is one of ``states``; returns the last ``scontrol`` view."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") in states or time.monotonic() > deadline:
                return info
            time.sleep(0.5)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[LocalSlurm]:
    """A running :class:`LocalSlurm` for the test session; torn down (by pid files) at the end."""
    ensure_installed()
    if os.geteuid() != 0:
        pytest.skip("slurm tests: the local Slurm daemons need root")
    cluster = LocalSlurm(Path(tempfile.mkdtemp(prefix="seed-asr-slurm-")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)
