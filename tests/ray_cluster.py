"""A multi-node Ray cluster on this machine for the tests: a head and worker nodes, each a separate
``ray start --block`` process tree (GCS and raylet for the head, a raylet and its workers for each
worker node) with its own resources, ports and temporary folder, token authentication on.

Every process the cluster starts (``ray start``, GCS, raylets, Ray's agents and the worker processes
they fork, which Ray renames ``ray::IDLE`` / ``ray::<task>``) inherits the environment variable
``XCIT_TEST_RAY_NODE=<root>/<node>``, so :meth:`LocalRayCluster.processes` finds exactly this
cluster's processes (never another Ray on the machine), and :meth:`LocalRayCluster.stop` ends
them by pid.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's floor is 75 MiB... of bytes: 78,643,200 < 83,886,080
MARKER = "XCIT_TEST_RAY_NODE"  # in the environment of every process of a node: <root>/<node>
START_TIMEOUT_S = 180  # a node's `ray start` on a busy 2-core machine takes seconds, sometimes a minute


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_binary() -> str:
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else "ray"


@dataclass
class NodeProc:
    name: str
    resources: dict
    proc: subprocess.Popen
    log: Path
    lines: list = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    node_id: str | None = None


class LocalRayCluster:
    """``head(resources)`` then ``worker(name, resources)`` ...; ``stop()`` ends everything."""

    def __init__(self, root: Path, env: dict | None = None, health_check_ms: int = 500):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_hex(32)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: dict[str, NodeProc] = {}
        self.env = {**os.environ, **(env or {}),
                    # Token authentication on every node and driver: RAY_AUTH_MODE=token and the shared token.
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                    # A lost node is declared dead within seconds (Ray's defaults take ~15 s), so tests stay short.
                    "RAY_health_check_period_ms": str(health_check_ms),
                    "RAY_health_check_timeout_ms": str(health_check_ms),
                    "RAY_health_check_failure_threshold": "3",
                    "RAY_health_check_initial_delay_ms": "0",
                    # Workers whose GCS is gone give up after this long (default 60 s).
                    "RAY_gcs_rpc_server_reconnect_timeout_s": "10",
                    "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)

    def driver_env(self) -> dict:
        """What a driver (xcit-export) needs to join: the same auth mode and token."""
        return {k: self.env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}

    def _start(self, name: str, resources: dict, head: bool) -> NodeProc:
        tmp = self.root / name  # short: Ray's unix sockets live under it (108-byte path limit)
        cmd = [ray_binary(), "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
               "--num-gpus", "0", "--resources", json.dumps(resources), "--object-store-memory",
               str(OBJECT_STORE_BYTES), "--temp-dir", str(tmp), "--disable-usage-stats",
               "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
               "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
               "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
               "--log-style", "record"]
        if head:
            cmd += ["--head", "--port", str(self.port), "--include-dashboard", "false"]
        else:
            cmd += ["--address", self.address]
        log = self.root / f"{name}.log"
        proc = subprocess.Popen(cmd, env={**self.env, MARKER: str(tmp)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        node = NodeProc(name, resources, proc, log)
        self.nodes[name] = node

        def pump():
            with open(log, "w") as fh:
                for line in proc.stdout:
                    fh.write(line)
                    fh.flush()
                    node.lines.append(line)
                    if "Ray runtime started" in line:
                        node.started.set()
            node.started.set()  # ended: wait() below sees the process gone

        threading.Thread(target=pump, daemon=True).start()
        return node

    def _wait(self, node: NodeProc) -> None:
        if not node.started.wait(START_TIMEOUT_S) or node.proc.poll() is not None:
            tail = "".join(node.lines[-30:])
            raise RuntimeError(f"ray node {node.name} did not start within {START_TIMEOUT_S} s:\n{tail}")
        node.node_id = self._node_id(node)

    def _node_id(self, node: NodeProc) -> str | None:
        """The node's Ray id, from its raylet's command line (what the raylet registers with the GCS)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            raylet = self.raylet_pid(node.name)
            if raylet:
                try:
                    args = Path(f"/proc/{raylet}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    args = []
                for a in args:
                    if a.startswith(b"--node_id="):
                        return a.split(b"=", 1)[1].decode()
            time.sleep(0.2)
        return None

    def head(self, resources: dict) -> NodeProc:
        node = self._start("head", resources, head=True)
        self._wait(node)
        return node

    def workers(self, spec: dict[str, dict]) -> None:
        """Start worker nodes (name -> resources) together, then wait for all."""
        started = [self._start(name, res, head=False) for name, res in spec.items()]
        for node in started:
            self._wait(node)

    # -- processes ---------------------------------------------------------------------------

    def processes(self, name: str | None = None) -> list[tuple[int, str]]:
        """(pid, command line) of every live process of this cluster (or of node ``name``)."""
        want = [f"{MARKER}={self.root / n}".encode() for n in ([name] if name else self.nodes)]
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
                if not any(w in env for w in want):
                    continue
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":  # a zombie is already gone; its parent has not reaped it yet
                out.append((int(entry.name), cmd))
        return out

    def raylet_pid(self, name: str) -> int | None:
        for pid, cmd in self.processes(name):
            if cmd.split(" ")[0].endswith("/raylet"):
                return pid
        return None

    def busy_workers(self, name: str, tasks: tuple = ("evaluate_shard", "measure_cell")) -> list[str]:
        """Titles of node ``name``'s worker processes running one of ``tasks`` (Ray titles a worker
        ``ray::<task name>`` while it runs one; its agents are ``ray::DashboardAgent`` and the like)."""
        return [cmd for _, cmd in self.processes(name) if cmd.split(" ")[0] in {f"ray::{t}" for t in tasks}]

    def kill_node(self, name: str) -> int:
        """SIGKILL the node's raylet (the node is lost, as when its machine dies); returns its pid."""
        pid = self.raylet_pid(name)
        assert pid, f"no raylet found for node {name}"
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill_head(self) -> None:
        """SIGKILL the head's GCS and raylet at once."""
        for pid, cmd in self.processes("head"):
            exe = cmd.split(" ")[0]
            if exe.endswith("/gcs_server") or exe.endswith("/raylet"):
                os.kill(pid, signal.SIGKILL)

    def stop(self, timeout: float = 30) -> list[tuple[int, str]]:
        """End every process of this cluster: SIGTERM to each ``ray start --block`` (it stops its node),
        then SIGKILL, by pid, whatever of the cluster is left. Returns what was still alive after that
        (nothing, or the test fails)."""
        for node in self.nodes.values():
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.processes():
            time.sleep(0.3)
        for pid, _ in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for node in self.nodes.values():
            try:
                node.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        time.sleep(0.5)
        return self.processes()
