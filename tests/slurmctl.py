"""A real one-node Slurm cluster on localhost for the runner tests: munged, slurmctld, slurmd.

Debian's ``slurm-wlm`` and ``munge`` (``make test`` installs them). Everything lives in a temp
dir: the munge key and socket, slurm.conf, state, spool and logs; both Slurm daemons run in the
foreground (``-D``) as our children, on free loopback ports. No systemd, no cgroups:
``proctrack/linuxproc`` and ``task/none`` work in a plain container.

The node advertises GPUs as GRES so ``--gres=gpu:N`` works: Slurm drops a GPU without a device
file and refuses a file that is not a character device, so each "GPU" is a link to /dev/null
(nothing opens it: ``task/none`` constrains no devices).

A daemon that dies or a node that never turns idle fails the fixture with the logs' tails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

NODE = "wsnode"
GPUS = 4
CPUS = 4
START_TIMEOUT_SECONDS = 30.0


@dataclass
class LocalSlurm:
    root: Path
    conf: Path
    node: str
    gpus: int
    started_in_seconds: float = 0.0
    version: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def cli(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command against this cluster (for test setup and checks, not the runner)."""
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=15, check=check)

    def log_tails(self, lines: int = 15) -> str:
        out = []
        for path in sorted((self.root / "log").glob("*")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_config(root: Path, host: str) -> Path:
    devs = root / "dev"
    devs.mkdir()
    for i in range(GPUS):
        (devs / f"gpu{i}").symlink_to("/dev/null")
    (root / "gres.conf").write_text(f"Name=gpu File={devs}/gpu[0-{GPUS - 1}]\n")
    conf = root / "slurm.conf"
    conf.write_text(
        f"""\
ClusterName=wattshift
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/run/munge.sock
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
# the container may have fewer CPUs than the node claims: believe the config, do not drain
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=2
# start a submitted or released job at once, not on the next batch pass (default: 3 s)
SchedulerParameters=batch_sched_delay=0
GresTypes=gpu
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory=1000 Gres=gpu:{GPUS} State=UNKNOWN
PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""
    )
    return conf


def _spawn(cluster: LocalSlurm, name: str, argv: list[str]) -> None:
    log = (cluster.root / "log" / f"{name}.out").open("wb")
    try:
        cluster.procs[name] = subprocess.Popen(
            argv, env=cluster.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        log.close()


def _wait_for(cluster: LocalSlurm, what: str, ready: object, deadline: float) -> None:
    assert callable(ready)
    while not ready():
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {proc.returncode} while waiting for {what}\n{cluster.log_tails()}"
                )
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}\n{cluster.log_tails()}")
        time.sleep(0.05)


def _node_idle(cluster: LocalSlurm) -> bool:
    done = cluster.cli("sinfo", "--noheader", f"--nodes={NODE}", "--format=%t", check=False)
    return done.returncode == 0 and done.stdout.strip() == "idle"


def _stop(cluster: LocalSlurm) -> None:
    # Jobs first: their slurmstepd outlives slurmd, so cancel them while the cluster still runs.
    if "slurmctld" in cluster.procs and cluster.procs["slurmctld"].poll() is None:
        listed = cluster.cli("squeue", "--noheader", "--format=%i", check=False).stdout.split()
        if listed:
            cluster.cli("scancel", *listed, check=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left = cluster.cli("squeue", "--noheader", "--format=%i", check=False)
            if left.returncode != 0 or not left.stdout.strip():
                break
            time.sleep(0.1)
    for name in ("slurmd", "slurmctld", "munged"):
        proc = cluster.procs.get(name)
        if proc is None:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    _kill_leftovers(cluster.conf)


def _kill_leftovers(conf: Path) -> None:
    """Any process still carrying this cluster's SLURM_CONF (a job step that slurmd left
    behind) is ours: kill it by pid."""
    marker = f"SLURM_CONF={conf}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)


@contextlib.contextmanager
def local_slurm() -> Iterator[LocalSlurm]:
    """Start the cluster, yield it once its node is idle, and take it all down afterwards."""
    for tool in ("munged", "slurmctld", "slurmd", "sbatch"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed: `make test` installs slurm-wlm and munge")
    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="wattshift-slurm-"))
    root.chmod(0o755)  # munged insists every directory above its socket is searchable by all
    for sub in ("key", "run", "state", "spool", "log"):
        (root / sub).mkdir(mode=0o755)
    (root / "key").chmod(0o700)
    key = root / "key" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    cluster = LocalSlurm(root, _write_config(root, socket.gethostname().split(".")[0]), NODE, GPUS)
    try:
        run = root / "run"
        _spawn(cluster, "munged", [
            "munged", "--foreground", f"--socket={run}/munge.sock", f"--key-file={key}",
            f"--pid-file={run}/munged.pid", f"--log-file={root}/log/munged.log", f"--seed-file={run}/munged.seed",
        ])  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        _wait_for(cluster, "the munge socket", (run / "munge.sock").exists, deadline)
        _spawn(cluster, "slurmctld", ["slurmctld", "-D", "-i"])
        _spawn(cluster, "slurmd", ["slurmd", "-D", "-N", NODE])
        _wait_for(cluster, f"node {NODE} to be idle", lambda: _node_idle(cluster), deadline)
        cluster.started_in_seconds = time.monotonic() - began
        cluster.version = cluster.cli("sinfo", "--version").stdout.strip()
        yield cluster
    finally:
        try:
            _stop(cluster)
        finally:
            shutil.rmtree(root, ignore_errors=True)
