"""Real Ray clusters on this machine for the scale-out tests: each node is a `ray start --block`
process group of our own on 127.0.0.1 with free ports and its own temp dir, stopped by its PID
(never `ray stop`, which would stop every Ray on the machine). Plus the inputs a tiny diffusion job
needs (untrained autoencoder bundles, random latent shards) and `ray job submit`."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int, exclude: tuple[int, ...] = ()) -> list[int]:
    """Distinct free ports. Every socket stays bound until all are chosen: closing each before the
    next bind can hand out one port twice (a node once got it for its GCS and its node manager,
    and `ray start` refused to run)."""
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] in exclude:
                s.close()
                continue
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_for_port(port: int, seconds: float = 120, proc: subprocess.Popen | None = None,
                  log: Path | None = None) -> None:
    """Until something listens on ``port``; fails at once if ``proc`` (the server) has exited."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"the server meant to listen on {port} exited with {proc.returncode}:\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds}s")


def cluster_env(**extra: str) -> dict[str, str]:
    """The environment of our nodes and drivers: not the address of a Ray this test process may
    already run, no usage stats."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_NAMESPACE")}
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", **extra})
    return env


class LocalRayNode:
    """One `ray start --block` node. ``head=True`` opens a GCS and a dashboard (job API)."""

    def __init__(self, *, num_cpus: int, env: dict[str, str], head_gcs: str | None = None,
                 extra_args: tuple[str, ...] = (), temp_dir: str | None = None, gcs_port: int | None = None):
        self.env = env
        self.head = head_gcs is None
        # Short: Ray's Unix sockets live under the temp dir, and socket paths are limited to ~107 bytes.
        self.temp_dir = temp_dir or tempfile.mkdtemp(prefix="bassray-ray-", dir="/tmp")
        # Every port our own: with Ray's defaults (52365 ...) a second Ray on the machine, such as a
        # running quickstart, keeps this node's agents from starting.
        chosen = free_ports(8, exclude=(gcs_port,) if gcs_port else ())
        ports = [f"--dashboard-agent-listen-port={chosen[0]}", f"--dashboard-agent-grpc-port={chosen[1]}",
                 f"--metrics-export-port={chosen[2]}", f"--runtime-env-agent-port={chosen[3]}",
                 f"--node-manager-port={chosen[4]}", f"--object-manager-port={chosen[5]}"]
        args = [RAY, "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
                f"--temp-dir={self.temp_dir}", *ports, *extra_args]
        if self.head:
            self.gcs_port, self.dashboard_port = gcs_port or chosen[6], chosen[7]
            args += ["--head", f"--port={self.gcs_port}", "--dashboard-host=127.0.0.1",
                     f"--dashboard-port={self.dashboard_port}"]
            self.gcs_address = f"127.0.0.1:{self.gcs_port}"
        else:
            args += [f"--address={head_gcs}"]
            self.gcs_address = head_gcs
        self.log_path = Path(self.temp_dir) / "ray-start.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if self.head:
            wait_for_port(self.dashboard_port, proc=self.proc, log=self.log_path)

    @property
    def job_address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def stop(self) -> None:
        """Our node and everything it started: its process group, by PID."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)  # a graceful `ray start --block` shutdown took 30+ s
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
            except ProcessLookupError:
                pass
        self.log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def alive_nodes(job_address: str, env: dict[str, str]) -> list[dict]:
    """Ray's state API, through the head's dashboard (in a subprocess, so this test process's own
    Ray session, if any, is not involved)."""
    code = ("import json; from ray.util.state import list_nodes; "
            f"nodes = list_nodes(address={job_address!r}, filters=[('state', '=', 'ALIVE')], "
            "limit=1000, raise_on_missing_output=False); "
            "print(json.dumps([{'node_id': n.node_id, 'cpus': n.resources_total.get('CPU', 0), "
            "'gpus': n.resources_total.get('GPU', 0), 'is_head': n.is_head_node} for n in nodes]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def wait_for_nodes(job_address: str, env: dict[str, str], count: int, seconds: float = 120) -> list[dict]:
    deadline = time.monotonic() + seconds
    while True:
        nodes = alive_nodes(job_address, env)
        if len(nodes) == count or time.monotonic() > deadline:
            return nodes
        time.sleep(1)


def submit_job(address: str, env: dict[str, str], entrypoint: list[str], timeout: float = 900,
               wait: bool = True, env_vars: dict[str, str] | None = None, working_dir: bool = True
               ) -> subprocess.CompletedProcess | subprocess.Popen:
    """`ray job submit --working-dir <repo> -- python <entrypoint...>` (``env_vars`` for the job's
    processes); with ``wait=False`` the running `ray job submit` process (it follows the job's logs
    until the job ends)."""
    runtime_env = ["--runtime-env-json", json.dumps({"env_vars": env_vars})] if env_vars else []
    if working_dir:
        cmd = [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), *runtime_env, "--",
               sys.executable, *entrypoint]
    else:  # the nodes share this machine's files: run the checkout's script in place
        cmd = [RAY, "job", "submit", "--address", address, *runtime_env, "--",
               sys.executable, str(REPO / entrypoint[0]), *entrypoint[1:]]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(60):  # the dashboard answers before its job agent is ready on a busy machine
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if "No available agent" not in done.stderr + done.stdout:
            return done
        time.sleep(5)
    return done


def write_tiny_ldm_inputs(root: Path, config, tracks: int = 6, frames: int = 24, seed: int = 0
                          ) -> tuple[Path, Path, Path]:
    """(latents, mix bundle, target bundle) for a tiny diffusion job: untrained autoencoders (the
    job only reads their configs and, at evaluation, decodes with them) and random latent shards."""
    import torch

    from bassray.data.latents import LatentStats, npy_bytes
    from bassray.models.autoencoder import Autoencoder
    from bassray.bundles.files import save_bundle

    torch.manual_seed(seed)
    mix_bundle = save_bundle(root / "mix-ae", "autoencoder", config,
                             Autoencoder(config.mix_autoencoder, config.audio), metadata={"stem": "mix"})
    target_bundle = save_bundle(root / "bass-ae", "autoencoder", config,
                                Autoencoder(config.bass_autoencoder, config.audio),
                                metadata={"stem": config.data.target_stem})
    dx, dy = config.mix_autoencoder.latent_dim, config.bass_autoencoder.latent_dim
    rng = np.random.default_rng(seed)
    latents = root / "latents"
    for split, count in (("train", tracks), ("val", 2)):
        (latents / split).mkdir(parents=True)
        with tarfile.open(latents / split / f"{split}-000000.tar", "w") as tar:
            for i in range(count):
                members = {"mix_latents.npy": npy_bytes(rng.normal(size=(2, dx, frames)).astype(np.float16)),
                           "target_latent.npy": npy_bytes(rng.normal(size=(dy, frames)).astype(np.float16)),
                           "json": json.dumps({"latent_frame_rate": 1.0}).encode()}
                for name, data in members.items():
                    info = tarfile.TarInfo(f"{split}{i:04d}.{name}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    LatentStats([0.0] * dx, [1.0] * dx, [0.0] * dy, [1.0] * dy, target_minus_mix_db=-6.0).save(latents)
    return latents, Path(mix_bundle), Path(target_bundle)
