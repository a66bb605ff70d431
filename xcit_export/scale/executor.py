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
:class:`Outcome` with its error; the other tasks still finish. A node lost mid-run: Ray retries its
tasks on another live node of the same kind; a task whose kind no live node advertises any more
would wait forever, so it is cancelled and reported ``node lost: no live node of kind X`` (the
cluster is looked at every :data:`LOSS_CHECK_S` seconds while tasks are pending). The head lost
(its GCS stops answering) stops the run with :class:`HeadLostError`, one sentence.

Placement. Every :class:`Outcome` says where its task ran (``details["placement"]``): the Ray node
id, that node's kinds (the custom resources it advertises) and its hostname; the hostname alone
cannot tell nodes apart (several nodes on one machine, containers sharing a name).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..errors import BackendUnavailableError, XcitExportError
from ..values import RAY_RESERVED, RAY_RESERVED_PREFIXES

LOCAL_KIND = "local"  # every machine running xcit-export itself advertises this
PYTORCH_KIND = "pytorch"  # a node that can run the PyTorch reference (the matrix asks for it)
SHARED_AMOUNT = 0.01  # of a kind, for accuracy work that may share a node
RETRIES = 1
POLL_S = 0.5  # how long one ray.wait blocks before the driver looks up again
LOSS_CHECK_S = 2.0  # how often, while tasks are pending, the cluster is checked for lost nodes and head
RAY_INSTALL_HINT = ("--executor ray needs Ray, which is not installed here; install it with "
                    "pip install -e '.[ray]' (or pip install 'ray[default]'), or use --executor local")


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


class HeadLostError(XcitExportError):
    """The Ray head stopped answering mid-run: the run cannot go on (what finished is on disk)."""


@dataclass
class Node:
    name: str  # hostname
    cpus: int
    kinds: list[str]
    node_id: str | None = None  # Ray's node id (None: the local executor, no Ray node)

    def placement(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "node": self.name, "kinds": list(self.kinds)}


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

    def run(self, tasks: list[Task]) -> list[Outcome]:
        """One :class:`Outcome` per task, in the tasks' order."""
        out: list[Outcome | None] = [None] * len(tasks)
        for i, outcome in self.run_iter(tasks):
            out[i] = outcome
        return out  # type: ignore[return-value]

    def run_iter(self, tasks: list[Task]) -> Iterator[tuple[int, Outcome]]:
        """``(index in tasks, outcome)`` as each task finishes (any order), so a caller can write
        what finished before the rest is done."""
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

    def run_iter(self, tasks: list[Task]) -> Iterator[tuple[int, Outcome]]:
        here = {"placement": self.nodes()[0].placement()}
        for i, task in enumerate(tasks):
            why = self.placement_error(task.kind)
            if why:
                yield i, Outcome(task.label, False, error=why)
                continue
            yield i, self._attempt(task, here)

    @staticmethod
    def _attempt(task: Task, here: dict) -> Outcome:
        """Run ``task``; retry once after a crash. A user-facing error (bad data, a broken reference)
        is deterministic: not retried, and its exception kept (``details["exception"]``) so a single
        run can raise it as it is."""
        error = None
        for _attempt in range(RETRIES + 1):
            try:
                value = task.fn(*task.args)
            except XcitExportError as exc:
                return Outcome(task.label, False, error=str(exc), details={**here, "exception": exc})
            except Exception as exc:  # noqa: BLE001 - recorded in the outcome, as Ray does
                error = _describe(exc)
            else:
                return Outcome(task.label, True, value, details=dict(here))
        return Outcome(task.label, False, error=f"failed twice (retried once): {error}", details=dict(here))


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
        self._head_lost = False
        self._remote: Any = None  # ray.remote(_placed), made once
        self._frozen: list[Node] | None = None  # the cluster as seen at the start of run()
        self._known: dict[str, Node] = {}  # every node seen, by id (a lost node's kinds stay on record)
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
                                          f"start its head with 'ray start --head' and pass its address. "
                                          f"{_auth_hint()}") from None
            self._owned = True

    def nodes(self) -> list[Node]:
        """The live nodes (as frozen at the start of a run, while it runs)."""
        if self._frozen is not None:
            return self._frozen
        return self._live_nodes()

    def _live_nodes(self) -> list[Node]:
        self._check_head()  # every GCS call: a dead head would hold it for a minute, then abort the process
        out = []
        for n in self._ray.nodes():
            if not n.get("Alive"):
                continue
            res = n.get("Resources", {})
            kinds = sorted(k for k in res if k not in RAY_RESERVED and not k.startswith(RAY_RESERVED_PREFIXES))
            node = Node(n.get("NodeManagerHostname") or n.get("NodeManagerAddress", "?"), int(res.get("CPU", 0)),
                        kinds, n.get("NodeID"))
            self._known[node.node_id] = node
            out.append(node)
        return out

    def _placement(self, node_id: str, hostname: str) -> dict[str, Any]:
        node = self._known.get(node_id)
        if node is None:  # a node that joined after the run started
            self._live_nodes()
            node = self._known.get(node_id)
        return {"node_id": node_id, "node": hostname, "kinds": list(node.kinds) if node else []}

    def put(self, obj: Any) -> Any:
        self._check_head()
        return self._ray.put(obj)

    def _options(self, task: Task) -> dict[str, Any]:
        # name: what Ray calls the task (`ray list tasks`) and titles its worker process (ray::<name>)
        opts: dict[str, Any] = {"max_retries": RETRIES, "retry_exceptions": True,
                                "name": getattr(task.fn, "__name__", "task")}
        if task.exclusive:
            opts["num_cpus"] = self.threads(task)
        else:
            opts["num_cpus"] = 1
        if task.kind:
            opts["resources"] = {task.kind: 1.0 if task.exclusive else SHARED_AMOUNT}
        return opts

    def run_iter(self, tasks: list[Task]) -> Iterator[tuple[int, Outcome]]:
        self._frozen = None
        self._frozen = self.nodes()  # one look at the cluster per run, not one per task
        try:
            yield from self._run(tasks)
        finally:
            self._frozen = None

    def _run(self, tasks: list[Task]) -> Iterator[tuple[int, Outcome]]:
        ray = self._ray
        if self._remote is None:
            self._remote = ray.remote(_placed)
        pending: dict[Any, int] = {}
        for i, task in enumerate(tasks):
            why = self.placement_error(task.kind)
            if why:  # a task no node can take would wait forever: refuse it up front
                yield i, Outcome(task.label, False, error=why)
                continue
            pending[self._remote.options(**self._options(task)).remote(task.fn, *task.args)] = i
        checked = time.monotonic()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            if ready:  # and whatever else is done by now
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
            for ref in ready:
                i = pending.pop(ref)
                yield i, self._outcome(tasks[i], ref)
            if pending and time.monotonic() - checked >= LOSS_CHECK_S:
                checked = time.monotonic()
                yield from self._lost(tasks, pending)

    def _outcome(self, task: Task, ref: Any) -> Outcome:
        ray = self._ray
        try:
            value, (node_id, hostname) = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the task raised, twice
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            return Outcome(task.label, False, error=f"failed twice (retried once): {_describe(cause)}")
        except ray.exceptions.RayError as exc:  # worker or node lost, twice; object lost...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return Outcome(task.label, False, error=f"lost twice (retried once): {type(exc).__name__}: {first}")
        return Outcome(task.label, True, value, details={"placement": self._placement(node_id, hostname)})

    def _lost(self, tasks: list[Task], pending: dict[Any, int]) -> Iterator[tuple[int, Outcome]]:
        """Fail the pending tasks whose kind no live node advertises any more; stop if the head is gone."""
        try:
            live = self._live_nodes()
        except HeadLostError:
            raise
        except Exception as exc:  # noqa: BLE001 - the GCS went away between the probe and the call
            self._head_lost = True
            raise HeadLostError(f"the Ray head stopped answering mid-run ({type(exc).__name__}: {exc}); what "
                                f"finished is on disk, and the same command run again resumes from it") from None
        kinds = {k for n in live for k in n.kinds}
        live_ids = {n.node_id for n in live}
        for ref, i in list(pending.items()):
            kind = tasks[i].kind
            if kind is None or kind in kinds:
                continue
            gone = sorted(n.node_id for n in self._frozen or [] if kind in n.kinds and n.node_id not in live_ids)
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - the task is abandoned either way; nothing waits on it
                pass
            del pending[ref]
            lost = [self._known[n].placement() for n in gone if n in self._known]
            yield i, Outcome(tasks[i].label, False,
                             error=f"node lost: no live node of kind {kind} (node(s) {', '.join(gone) or '?'} "
                                   f"advertised it when the run started and are gone)",
                             details={"placement": {"lost_nodes": lost}})

    def _check_head(self) -> None:
        """Probe the head's GCS port: a dead head would otherwise make Ray's calls retry for a minute."""
        try:
            gcs = self._ray.get_runtime_context().gcs_address
        except Exception:  # noqa: BLE001 - no address to probe: Ray's own calls decide
            return
        host, _, port = str(gcs).rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=3).close()
        except (OSError, ValueError) as exc:
            self._head_lost = True
            raise HeadLostError(f"the Ray head at {gcs} stopped answering mid-run "
                                f"({getattr(exc, 'strerror', None) or exc}); what finished is on disk, and the "
                                f"same command run again resumes from it") from None

    def close(self) -> None:
        if self._head_lost:
            return  # ray.shutdown() would wait on the dead head; the process exits without it
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()


def _placed(fn: Callable, *args: Any) -> tuple[Any, tuple[str, str]]:
    """A task as Ray runs it: ``fn(*args)``, and the Ray node id and hostname it ran on."""
    import ray

    return fn(*args), (ray.get_runtime_context().get_node_id(), socket.gethostname())


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


def _auth_hint() -> str:
    """What to check when a head refuses us: Ray 2.59+ heads often use token authentication."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode != "token":
        return (f"If the head uses token authentication (Ray's log says InvalidAuthToken), set RAY_AUTH_MODE=token "
                f"(it is {mode or 'unset'} here) and give the head's token through RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH "
                f"or ~/.ray/auth_token (docs/ray.md)")
    return ("RAY_AUTH_MODE=token is set: check that the token here (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
            "~/.ray/auth_token) is the head's ('ray get-auth-token' on the head prints it; docs/ray.md)")


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
