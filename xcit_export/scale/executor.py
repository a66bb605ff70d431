"""Where matrix work runs: serially in this process (:class:`LocalExecutor`) or as Ray tasks on a
cluster (:class:`RayExecutor`). Both take the same :class:`Task` list and give back one
:class:`Outcome` per task, so :mod:`xcit_export.scale.matrix` and its report do not know which ran them.

Device kinds are how a task says where it must run. A node *advertises* kinds; a task asking for a
kind lands only on a node advertising it. On Ray a kind is a custom resource
(``ray start --resources '{"jetson-orin": 1}'``, https://docs.ray.io/en/latest/ray-core/scheduling/resources.html);
this machine, for ``--executor local`` and for a local Ray started here, advertises
:func:`local_kinds`: ``local``, ``pytorch`` where PyTorch is installed (the reference runs only
there), plus what its CPU and GPUs show (``cpu-avx2``, ``cpu-avx512``, ``cpu-vnni``, ``cpu-amx``,
``cpu-neon``, ``nvidia-gpu``).

Sharing a node. Each kind is advertised with amount 1 per node. A *shared* task (accuracy work)
asks for 0.01 of its kind and one CPU, so up to 100 share a node. An *exclusive* task (a latency
measurement) asks for the whole 1.0 of its kind and as many CPUs as the smallest node of that kind
has, so nothing else of ours runs beside it while it times: two timings sharing a CPU are noise.

Failures. A task that raises, or whose worker process dies, is retried once (Ray: ``max_retries=1``
for a lost worker, ``retry_exceptions=True`` for an exception;
https://docs.ray.io/en/latest/ray-core/fault_tolerance/tasks.html), then reported as a failed
:class:`Outcome` with its error; the other tasks still finish.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import BackendUnavailableError, XcitExportError

LOCAL_KIND = "local"  # every machine running xcit-export itself advertises this
PYTORCH_KIND = "pytorch"  # a node that can run the PyTorch reference (the matrix asks for it)
SHARED_AMOUNT = 0.01  # of a kind, for accuracy work that may share a node
RETRIES = 1
RAY_INSTALL_HINT = ("--executor ray needs Ray, which is not installed here; install it with "
                    "pip install -e '.[ray]' (or pip install 'ray[default]'), or use --executor local")
# Resource names Ray reserves; a device kind may not be one of them.
_RAY_BUILTIN = {"CPU", "GPU", "TPU", "memory", "object_store_memory"}
_KIND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_kind_name(kind: Any) -> str:
    """A device kind is a plain resource name: ``jetson-orin``, ``intel-cpu-vnni``, ``cpu-avx2``."""
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise XcitExportError(f"device kind {kind!r} is not a name; use letters, digits, '-', '_' or '.', "
                              f"e.g. \"jetson-orin\"")
    if kind in _RAY_BUILTIN or kind.startswith(("node:", "accelerator_type:")):
        raise XcitExportError(f"device kind '{kind}' is a resource Ray reserves; name the device, e.g. "
                              f"\"nvidia-rtx\" rather than \"GPU\"")
    return kind


def local_kinds() -> list[str]:
    """The device kinds this machine advertises (see the module docstring)."""
    from ..fingerprint import _cpuinfo, _gpus

    import importlib.util

    _, flags = _cpuinfo()
    kinds = [LOCAL_KIND]
    if importlib.util.find_spec("torch") is not None:
        kinds.append(PYTORCH_KIND)
    for kind, needs in (("cpu-avx2", ("avx2",)), ("cpu-avx512", ("avx512f",)),
                        ("cpu-vnni", ("avx512_vnni", "avx_vnni")), ("cpu-amx", ("amx_tile",)),
                        ("cpu-neon", ("neon", "asimddp"))):
        if any(f in flags for f in needs):
            kinds.append(kind)
    if _gpus():
        kinds.append("nvidia-gpu")
    return kinds


@dataclass
class Node:
    name: str
    cpus: int
    kinds: list[str]


@dataclass
class Task:
    """One unit of work: ``fn(*args)`` on a node advertising ``kind`` (None: any node)."""

    fn: Callable[..., Any]
    args: tuple
    label: str
    kind: str | None = None
    exclusive: bool = False  # hold the node alone (latency); otherwise share it


@dataclass
class Outcome:
    label: str
    ok: bool
    value: Any = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class _Base:
    name = "base"

    def nodes(self) -> list[Node]:
        raise NotImplementedError

    def kinds(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for node in self.nodes():
            for kind in node.kinds:
                out.setdefault(kind, []).append(node)
        return out

    def placement_error(self, kind: str | None) -> str | None:
        """Why no node can run a task of ``kind`` (None when one can)."""
        if kind is None or kind in self.kinds():
            return None
        have = ", ".join(sorted(self.kinds())) or "none"
        how = (f"start a worker with ray start --address HEAD:6379 --resources '{{\"{kind}\": 1}}'"
               if self.name == "ray" else "run it with --executor ray on a cluster with such a node")
        return f"no node advertises device kind '{kind}' (the {self.name} executor's nodes advertise: {have}); {how}"

    def threads(self, task: Task) -> int:
        """Threads a task may use: the node's CPUs when it holds the node, else one."""
        if not task.exclusive:
            return 1
        nodes = self.kinds().get(task.kind, []) if task.kind else self.nodes()
        return max(1, min((n.cpus for n in nodes), default=1))

    def put(self, obj: Any) -> Any:
        return obj

    def close(self) -> None:
        pass


class LocalExecutor(_Base):
    """Runs tasks one after another in this process; the same retries and outcomes as Ray."""

    name = "local"

    def nodes(self) -> list[Node]:
        return [Node(socket.gethostname(), os.cpu_count() or 1, local_kinds())]

    def run(self, tasks: list[Task]) -> list[Outcome]:
        outcomes = []
        for task in tasks:
            why = self.placement_error(task.kind)
            if why:
                outcomes.append(Outcome(task.label, False, error=why))
                continue
            error = None
            for _attempt in range(RETRIES + 1):
                try:
                    outcomes.append(Outcome(task.label, True, task.fn(*task.args)))
                    break
                except Exception as exc:  # noqa: BLE001 - recorded in the outcome, as Ray does
                    error = _describe(exc)
            else:
                outcomes.append(Outcome(task.label, False, error=f"failed twice (retried once): {error}"))
        return outcomes


class RayExecutor(_Base):
    """Runs tasks on a Ray cluster: ``address`` joins one; None starts a local one here.

    Ray is imported here, not at module import, so the project works without it.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise BackendUnavailableError(RAY_INSTALL_HINT) from None
        self._ray = ray
        self._owned = False
        self._remote: dict[Callable, Any] = {}
        self._frozen: list[Node] | None = None  # the cluster as seen at the start of run()
        if not ray.is_initialized():
            if address is None:
                # A local cluster advertising this machine's kinds, as `ray start --head --resources` would.
                ray.init(num_cpus=num_cpus, resources={k: 1 for k in local_kinds()}, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
            else:
                _check_reachable(address)
                try:
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
                except (ConnectionError, ValueError, RuntimeError) as exc:
                    raise XcitExportError(f"--ray-address {address}: cannot join the Ray cluster ({exc}); "
                                          f"start its head with 'ray start --head' and pass its address") from None
            self._owned = True

    def nodes(self) -> list[Node]:
        if self._frozen is not None:
            return self._frozen
        out = []
        for n in self._ray.nodes():
            if not n.get("Alive"):
                continue
            res = n.get("Resources", {})
            kinds = sorted(k for k in res if k not in _RAY_BUILTIN and not k.startswith(("node:", "accelerator_type:")))
            out.append(Node(n.get("NodeManagerHostname") or n.get("NodeManagerAddress", "?"), int(res.get("CPU", 0)), kinds))
        return out

    def put(self, obj: Any) -> Any:
        return self._ray.put(obj)

    def _options(self, task: Task) -> dict[str, Any]:
        opts: dict[str, Any] = {"max_retries": RETRIES, "retry_exceptions": True}
        if task.exclusive:
            opts["num_cpus"] = self.threads(task)
        else:
            opts["num_cpus"] = 1
        if task.kind:
            opts["resources"] = {task.kind: 1.0 if task.exclusive else SHARED_AMOUNT}
        return opts

    def run(self, tasks: list[Task]) -> list[Outcome]:
        self._frozen = None
        self._frozen = self.nodes()  # one look at the cluster per run, not one per task
        try:
            return self._run(tasks)
        finally:
            self._frozen = None

    def _run(self, tasks: list[Task]) -> list[Outcome]:
        ray = self._ray
        pending: list[tuple[Task, Any]] = []
        for task in tasks:
            why = self.placement_error(task.kind)
            if why:  # a task no node can take would wait forever: refuse it up front
                pending.append((task, why))
                continue
            remote = self._remote.get(task.fn)
            if remote is None:
                remote = self._remote[task.fn] = ray.remote(task.fn)
            pending.append((task, remote.options(**self._options(task)).remote(*task.args)))
        outcomes = []
        for task, ref in pending:
            if isinstance(ref, str):
                outcomes.append(Outcome(task.label, False, error=ref))
                continue
            try:
                outcomes.append(Outcome(task.label, True, ray.get(ref)))
            except ray.exceptions.RayTaskError as exc:  # the task raised, twice
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                outcomes.append(Outcome(task.label, False, error=f"failed twice (retried once): {_describe(cause)}"))
            except ray.exceptions.RayError as exc:  # worker or node lost, twice; object lost...
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                outcomes.append(Outcome(task.label, False,
                                        error=f"lost twice (retried once): {type(exc).__name__}: {first}"))
        return outcomes

    def close(self) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()


def _check_reachable(address: str) -> None:
    """Fail in seconds, with one sentence, where Ray would retry an unreachable head for minutes."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # 'auto', 'ray://...' (Ray Client): Ray's own checks apply
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as exc:
        raise XcitExportError(f"--ray-address {address}: no Ray head answers there ({exc.strerror or exc}); "
                              f"start one with 'ray start --head --port {port}' or fix the address") from None


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, XcitExportError) else f"{type(exc).__name__}: {exc}"


def make_executor(name: str, address: str | None = None) -> LocalExecutor | RayExecutor:
    """``--executor local|ray`` (``--ray-address`` for ray)."""
    if name == "local":
        if address is not None:
            raise XcitExportError("--ray-address is only used with --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address)
    raise XcitExportError(f"--executor must be 'local' or 'ray', got '{name}'")
