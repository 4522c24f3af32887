"""The ``operation-dispatcher`` command (also ``python -m operation_dispatcher``).

    operation-dispatcher serve [--config FILE] [--resource-id ID] [--host H] [--port P]
                               [--journal PATH|:memory:] [--token T] [--demo] [--mcp-port P]
                               [--log-level LEVEL | --log-config FILE]
    operation-dispatcher mcp [--config FILE] [--resource-id ID] [--journal PATH|:memory:]
                             [--log-level LEVEL | --log-config FILE]
    operation-dispatcher check-config FILE
    operation-dispatcher fleet --broker HOST:PORT [--prefix P] [--json] [--wait S]
    operation-dispatcher gantt --journal FILE [--from ISO] [--to ISO] -o OUT.html
    operation-dispatcher --version

``serve`` runs one dispatcher, its hardware bridges (``[[bridges]]`` of the config) and its REST
API (waitress) until SIGINT or SIGTERM, then stops the server, the bridges, the dispatcher and
the journal, and exits 0. Command-line options win over the config file; the token may also
come from ``OPERATION_DISPATCHER_TOKEN``. ``--demo`` attaches a simulated machine and feeds it a
trickle of operations, approved by a simulated operator (with an occasional denial), so the API
shows live traffic; with a bridge whose device a plug-in can simulate (a Modbus executor bridge
on a loopback address, for one), the demo simulates that device (see :mod:`.demo`).

``serve`` logs one INFO line per operation start and finish (logger
``operation_dispatcher.cli.operations``), from a subscriber here: the core stays quiet about
operations. ``--log-config`` takes a TOML file in the stdlib's ``logging.config.dictConfig``
form (files, rotation, levels) instead of ``--log-level``.

With an ``[mqtt]`` section ``serve`` also reports to the plant's broker and takes commands from
it (:mod:`.mqtt`); ``fleet`` shows every controller on a broker (see :func:`fleet_command`).

Under systemd (``$NOTIFY_SOCKET``; see :mod:`.sdnotify` and
examples/systemd/operation-dispatcher.service) ``serve`` sends READY=1 once it listens,
STOPPING=1 when it shuts down, and, with ``WatchdogSec=``, WATCHDOG=1 from the dispatcher loop.
It opens the journal itself, with the ``[journal]`` limits (``max_bytes``,
``slow_write_seconds``), and closes it after the dispatcher.

With ``[mcp] port`` (or ``--mcp-port``) ``serve`` also serves the MCP server for LLM agents over
streamable HTTP (extra ``mcp``), behind the same tokens. ``mcp`` runs a dispatcher, its bridges
and the MCP server over stdin/stdout, for a desktop agent that starts it; it logs to stderr
only (stdout carries the protocol) and stops when stdin closes.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import logging.config
import signal
import sys
import threading
import tomllib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from . import __version__
from .config import Config, ConfigError, load_config
from .demo import LOOPBACK, DemoMachine, DemoUnavailable
from .errors import DispatcherError
from .gantt import add_parser as add_gantt_parser
from .gantt import gantt_command
from .models import FINISHED_EVENT_TYPES, DispatchEvent, EventType, finished_outcome

if TYPE_CHECKING:
    from .dispatcher import OperationDispatcher
    from .sdnotify import Notifier, Watchdog

log = logging.getLogger(__name__)
PROG = "operation-dispatcher"


# ------------------------------------------------------------------------------ commands


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Queue, dispatch and supervise the operations of one resource."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve", help="run a dispatcher and its REST API until SIGINT/SIGTERM",
        description="Run a dispatcher and its REST API (Swagger UI at /apidocs).",
    )
    serve.add_argument("--config", metavar="FILE", help="a TOML configuration file")
    serve.add_argument("--resource-id", metavar="ID", help="the resource this dispatcher serves")
    serve.add_argument("--host", metavar="H", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", metavar="P", type=int, help="port (default 8080; 0: any free)")
    serve.add_argument(
        "--journal", metavar="PATH",
        help="SQLite journal file (default ./operation-dispatcher.db); :memory: for none",
    )
    serve.add_argument(
        "--token", metavar="T",
        help="require 'Authorization: Bearer T' (default: $OPERATION_DISPATCHER_TOKEN)",
    )
    serve.add_argument("--demo", action="store_true",
                       help="simulate a machine with a trickle of operations and approvals")
    serve.add_argument("--mcp-port", metavar="P", type=int,
                       help="also serve MCP (streamable HTTP, extra 'mcp') on this port")
    serve.add_argument("--log-level", default="INFO", metavar="LEVEL",
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       help="DEBUG, INFO (default), WARNING or ERROR")
    serve.add_argument("--log-config", metavar="FILE",
                       help="a TOML file in logging.config.dictConfig form (replaces --log-level)")
    mcp = commands.add_parser(
        "mcp", help="run a dispatcher and its MCP server over stdin/stdout (a desktop agent)",
        description="Run a dispatcher, its bridges and its MCP server over stdio; logs go to "
                    "stderr; stops when stdin closes.",
    )
    mcp.add_argument("--config", metavar="FILE", help="a TOML configuration file")
    mcp.add_argument("--resource-id", metavar="ID", help="the resource this dispatcher serves")
    mcp.add_argument(
        "--journal", metavar="PATH",
        help="SQLite journal file (default ./operation-dispatcher.db); :memory: for none",
    )
    mcp.add_argument("--log-level", default="INFO", metavar="LEVEL",
                     choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                     help="DEBUG, INFO (default), WARNING or ERROR (to stderr)")
    mcp.add_argument("--log-config", metavar="FILE",
                     help="a TOML file in logging.config.dictConfig form (replaces --log-level)")
    check = commands.add_parser(
        "check-config", help="validate a configuration file and list every error",
    )
    check.add_argument("file", metavar="FILE")
    _fleet_parser(commands)
    add_gantt_parser(commands)
    return parser


def _fleet_parser(commands: Any) -> None:
    fleet = commands.add_parser(
        "fleet", help="a live table of every controller on an MQTT broker",
        description="Show every controller reporting to an MQTT broker (needs the mqtt extra).",
    )
    fleet.add_argument("--broker", required=True, metavar="HOST:PORT",
                       help="the broker (port default 1883)")
    fleet.add_argument("--prefix", default=None, metavar="P",
                       help="the controllers' topic prefix (default operation-dispatcher)")
    fleet.add_argument("--json", action="store_true",
                       help="print one JSON snapshot and exit (for scripts)")
    fleet.add_argument("--wait", type=float, default=2.0, metavar="S",
                       help="--json: seconds to wait for the controllers' messages (default 2)")
    fleet.add_argument("--interval", type=float, default=1.0, metavar="S",
                       help="seconds between two redraws of the table (default 1)")
    fleet.add_argument("--username", metavar="U")
    fleet.add_argument("--password", metavar="P",
                       help="(default: $OPERATION_DISPATCHER_MQTT_PASSWORD)")
    fleet.add_argument("--tls-ca", metavar="FILE", help="CA file: connect with TLS")
    fleet.add_argument("--tls-cert", metavar="FILE", help="client certificate (with --tls-key)")
    fleet.add_argument("--tls-key", metavar="FILE")


def _settings(args: argparse.Namespace) -> Config:
    """The config file (or the defaults) with the command-line options applied."""
    from .http import token_from_env

    config = _core_settings(args)
    http, mcp = config.http, config.mcp
    if args.host is not None:
        http = dataclasses.replace(http, host=args.host)
    if args.port is not None:
        http = dataclasses.replace(http, port=args.port)
    if args.mcp_port is not None:
        mcp = dataclasses.replace(mcp, port=args.mcp_port)
    token = args.token or token_from_env() or http.token
    http = dataclasses.replace(http, token=token)
    return dataclasses.replace(config, http=http, mcp=mcp)


def _core_settings(args: argparse.Namespace) -> Config:
    """The config file (or the defaults) with --resource-id and --journal applied."""
    config = load_config(args.config) if args.config else Config()
    dispatcher, journal = config.dispatcher, config.journal
    if args.resource_id is not None:
        dispatcher = dataclasses.replace(dispatcher, resource_id=args.resource_id)
    if args.journal is not None:
        journal = dataclasses.replace(journal, path=args.journal)
    return dataclasses.replace(config, dispatcher=dispatcher, journal=journal)


def serve(args: argparse.Namespace) -> int:
    try:
        from .http import ApiServer, create_app
        from .http.server import raise_open_file_limit
    except ImportError as exc:
        return _refuse(exc)
    from .dispatcher import OperationDispatcher
    from .journal import Journal

    problem = _set_up_logging(args)
    if problem is not None:
        return _refuse(problem)
    try:
        config = _settings(args)
    except ConfigError as exc:
        return _refuse(*exc.errors)
    for flag, port in (("--port", args.port), ("--mcp-port", args.mcp_port)):
        if port is not None and not 0 <= port <= 65535:
            return _refuse(f"{flag} must be from 0 to 65535")
    if config.mcp.port is not None:
        try:
            from .mcp import McpHttpServer, create_mcp_server
        except ImportError as exc:
            return _refuse(f"[mcp] port (--mcp-port) needs the mcp extra: {exc}")
    demo = DemoMachine() if args.demo else None
    kwargs = config.dispatcher_kwargs()
    if demo is not None:
        kwargs["on_request_callback"] = demo.on_request
    path = kwargs["journal"]
    try:
        # opened here with the [journal] limits, so closed here too (_close)
        kwargs["journal"] = None if path is None else Journal(path, **config.journal.journal_kwargs())
        dispatcher = OperationDispatcher(**kwargs)
    except (DispatcherError, ValueError) as exc:
        if isinstance(kwargs["journal"], Journal):
            kwargs["journal"].close()
        return _refuse(f"cannot create the dispatcher: {exc}")
    try:
        bridges = _build_bridges(dispatcher, config)
    except (DispatcherError, ImportError) as exc:
        return _abandon(dispatcher, f"cannot build the bridges: {exc}")
    try:
        link = _build_mqtt_link(dispatcher, config)
    except (DispatcherError, ImportError) as exc:
        return _abandon(dispatcher, f"cannot use the MQTT broker: {exc}")
    http = config.http
    try:
        app = create_app(
            dispatcher, token=http.token, tokens=http.tokens, max_body_bytes=http.max_body_bytes,
            stream_buffer_bytes=http.stream_buffer_bytes,
            heartbeat_seconds=http.heartbeat_seconds, max_event_streams=http.max_event_streams,
            bridges=bridges, signal_max_age_seconds=http.signal_max_age_seconds,
        )
    except ValueError as exc:  # e.g. --token repeats a named token of [http.tokens]
        return _abandon(dispatcher, f"cannot serve: {exc}")
    raise_open_file_limit(http.connection_limit + 64)  # each socket is a file descriptor
    try:
        server = ApiServer(
            app, http.host, http.port, threads=http.threads,
            connection_limit=http.connection_limit,
            idle_timeout_seconds=http.idle_timeout_seconds,
            write_timeout_seconds=http.write_timeout_seconds,
            # what waitress buffers (to disk beyond 512 KiB) before the app refuses a body:
            # without this, each of connection_limit sockets could spool 64 MiB
            max_request_body_size=2 * http.max_body_bytes + 65_536,
        )
    except OSError as exc:
        print(f"{PROG}: cannot listen on {http.host}:{http.port}: {exc}", file=sys.stderr)
        _close(dispatcher)
        return 1
    mcp_http = None
    if config.mcp.port is not None:
        from .credentials import Credentials

        try:
            mcp_http = McpHttpServer(
                create_mcp_server(dispatcher, bridges=bridges), config.mcp.host, config.mcp.port,
                credentials=Credentials.build(http.token, http.tokens),
            )
        except OSError as exc:
            print(f"{PROG}: cannot listen (MCP) on {config.mcp.host}:{config.mcp.port}: {exc}",
                  file=sys.stderr)
            server.stop()
            _close(dispatcher)
            return 1

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("%s received: shutting down", signal.Signals(signum).name)
        stop.set()

    dispatcher.subscribe(OperationLog(dispatcher))
    notifier, watchdog = _systemd(dispatcher)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        if link is not None:  # before the start: its OPERATION_DISPATCHER_STARTED is published
            link.start()
            assert config.mqtt is not None
            log.info("mqtt: reporting to %s:%d as %s/%s/...", config.mqtt.host,
                     config.mqtt.port, link.topics.prefix, dispatcher.resource_id)
        try:
            dispatcher.start()
        except DispatcherError as exc:  # the journal cannot record the start, for one
            print(f"{PROG}: cannot start the dispatcher: {exc}", file=sys.stderr)
            return 1  # (after the shutdown below)
        if demo is not None:
            demo.start(dispatcher, bridges)
        for bridge in bridges:
            bridge.start()
        server.start()
        url = server.url
        journal = path or "none (in memory)"
        print(
            f"{PROG}: serving {dispatcher.resource_id!r} on {url} "
            f"(dashboard {url}/dashboard, API docs {url}/apidocs, events {url}/events/stream, "
            f"journal {journal})",
            flush=True,
        )
        if mcp_http is not None:
            mcp_http.start()
            print(f"{PROG}: MCP (streamable HTTP) on {mcp_http.url}", flush=True)
            if mcp_http.host not in LOOPBACK and not (http.token or http.tokens):
                log.warning("serving MCP on %s without a token: anyone who can reach it may "
                            "use it", mcp_http.url)
        for bridge in bridges:
            log.info("bridge %s: %s bridge to %s", bridge.name, bridge.kind, bridge.endpoint)
        if http.host not in LOOPBACK and not (http.token or http.tokens):
            log.warning("serving %s without a token: anyone who can reach it may use it", url)
        if notifier is not None:  # it listens, the dispatcher runs: systemd may call it started
            notifier.send("READY=1", f"STATUS=serving {dispatcher.resource_id} on {url}")
        stop.wait()
    except (OSError, RuntimeError, DemoUnavailable) as exc:  # the demo's PLC cannot listen
        print(f"{PROG}: {exc}", file=sys.stderr)
        status = 1
    finally:
        # A second SIGINT/SIGTERM while shutting down only sets ``stop`` again: the handlers
        # stay until everything is stopped, so a shutdown never ends in a traceback.
        if notifier is not None:
            notifier.send("STOPPING=1")
        status = _shut_down(server, bridges, demo, dispatcher, mcp_http, link) or status
        if watchdog is not None:
            watchdog.stop()
        if notifier is not None:
            notifier.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print(f"{PROG}: stopped", flush=True)
    return status


def _set_up_logging(args: argparse.Namespace) -> str | None:
    """``--log-config FILE`` applied, else ``--log-level``; why the file cannot be used, if not."""
    if args.log_config is None:
        logging.basicConfig(
            level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        level = logging.getLevelName(args.log_level)
        logging.getLogger("transitions").setLevel(max(logging.WARNING, level))
        return None
    return _apply_log_config(args.log_config)


def _apply_log_config(path: str) -> str | None:
    """Read ``path`` (TOML) and hand it to ``logging.config.dictConfig``; None when it worked.

    ``disable_existing_loggers`` defaults to false here (the stdlib's default, true, would
    silence every logger imported before the file is read, this package's included).
    """
    where = f"--log-config {path}"
    try:
        with open(path, "rb") as file:
            settings = tomllib.load(file)
    except FileNotFoundError:
        return f"{where}: no such file"
    except OSError as exc:
        return f"{where}: cannot be read ({exc.strerror})"
    except tomllib.TOMLDecodeError as exc:
        return f"{where}: not valid TOML ({exc})"
    settings.setdefault("disable_existing_loggers", False)
    try:
        logging.config.dictConfig(settings)
    except (ValueError, TypeError, AttributeError, ImportError, OSError) as exc:
        cause = exc.__cause__ or exc.__context__
        reason = f"{exc}: {cause}" if cause is not None and str(cause) not in str(exc) else f"{exc}"
        return f"{where}: {' '.join(reason.split())}"  # one line
    return None


class OperationLog:
    """One INFO line per operation start and finish, for whoever reads ``serve``'s log.

    Subscribed to the dispatcher (called on its event thread, no lock held). It remembers the
    job id and start time of started operations until they finish; at most ``limit`` of them
    (only one runs at a time, so more means finishes were missed: the oldest are forgotten).
    """

    def __init__(
        self, dispatcher: OperationDispatcher, limit: int = 1024,
        logger: logging.Logger | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._limit = limit
        self._log = logger or logging.getLogger(f"{__name__}.operations")
        self._started: dict[UUID, tuple[str | None, datetime]] = {}

    def __call__(self, event: DispatchEvent) -> None:
        if event.operation_id is None:
            return
        if event.event_type is EventType.OPERATION_STARTED:
            self._on_start(event.operation_id, event)
        elif event.event_type in FINISHED_EVENT_TYPES:
            self._on_finish(event.operation_id, event)

    def _known(self, operation_id: UUID) -> tuple[str | None, datetime | None]:
        """The operation's job id and start time, as the dispatcher holds them now."""
        operation = self._dispatcher.get_operation(operation_id)
        return (None, None) if operation is None else (operation.job_id, operation.start_time)

    def _on_start(self, operation_id: UUID, event: DispatchEvent) -> None:
        job_id = self._known(operation_id)[0]
        self._started.pop(operation_id, None)
        while len(self._started) >= self._limit:
            del self._started[next(iter(self._started))]
        self._started[operation_id] = (job_id, event.created_at)
        self._log.info("operation %s started: job_id=%s", operation_id, job_id)

    def _on_finish(self, operation_id: UUID, event: DispatchEvent) -> None:
        outcome, reason = finished_outcome(event)
        # started before this subscriber (a run before a restart), else never (cancelled queued)
        started = self._started.pop(operation_id, None)
        job_id, start = self._known(operation_id) if started is None else started
        duration = "none (never started)"
        if start is not None:
            duration = f"{(event.created_at - start).total_seconds():.3f}s"
        self._log.info(
            "operation %s finished: job_id=%s outcome=%s termination_reason=%s duration=%s",
            operation_id, job_id, outcome, reason, duration,
        )


def _shut_down(
    server: Any, bridges: list[Any], demo: DemoMachine | None, dispatcher: OperationDispatcher,
    mcp_http: Any = None, link: Any = None,
) -> int:
    """Stop the servers, the bridges, the demo, the dispatcher and the MQTT link, each even if
    one before failed; a failure is one line on stderr (no traceback) and makes the exit
    status 1. The link goes last: it publishes the dispatcher's last events, then OFFLINE."""
    steps: list[tuple[str, Callable[[], object]]] = []
    if mcp_http is not None:
        steps.append(("the MCP server", mcp_http.stop))
    if server is not None:
        steps.append(("the HTTP server", server.stop))
    steps += [(f"bridge {bridge.name}", bridge.stop) for bridge in bridges]
    if demo is not None:
        steps.append(("the demo", demo.stop))
    steps.append(("the dispatcher", lambda: _close(dispatcher, timeout=10.0)))
    if link is not None:
        steps.append(("the MQTT link", link.stop))
    status = 0
    for what, stop_it in steps:
        try:
            stop_it()
        except Exception as exc:
            log.debug("stopping %s failed", what, exc_info=True)
            print(f"{PROG}: {what} did not stop cleanly: {exc}", file=sys.stderr)
            status = 1
    return status


def _systemd(dispatcher: OperationDispatcher) -> tuple[Notifier | None, Watchdog | None]:
    """systemd's notifier (``$NOTIFY_SOCKET``) and, with ``WatchdogSec=``, the watchdog pinged
    by the dispatcher loop (see :mod:`.sdnotify`); (None, None) outside systemd."""
    from .sdnotify import Notifier, Watchdog, watchdog_interval

    notifier = Notifier.from_environment()
    every = None if notifier is None else watchdog_interval()
    if notifier is None or every is None:
        return notifier, None
    watchdog = Watchdog(notifier, every, lambda: dispatcher.is_running)
    dispatcher.set_loop_heartbeat(watchdog.beat, every)
    watchdog.start()
    log.info("systemd watchdog: the dispatcher loop pings every %.3g s", every)
    return notifier, watchdog


def _close(dispatcher: OperationDispatcher, timeout: float | None = None) -> None:
    """Stop the dispatcher, then close the journal ``serve`` opened for it.

    Not when a thread did not stop: it may be inside a write; the exit releases the file.
    """
    dispatcher.close(timeout=timeout)
    if dispatcher.journal is not None:
        dispatcher.journal.close()


def _build_bridges(dispatcher: OperationDispatcher, config: Config) -> list[Any]:
    """The bridges of the config's ``[[bridges]]`` tables (built, not started)."""
    if not config.bridges:
        return []
    from .bridges import build_bridges

    return build_bridges(dispatcher, config.bridges)


def _build_mqtt_link(dispatcher: OperationDispatcher, config: Config) -> Any:
    """The MQTT link of the config's ``[mqtt]`` section (built, not started), or None."""
    if config.mqtt is None:
        return None
    from .mqtt import MqttLink

    return MqttLink(dispatcher, config.mqtt)


def _broker_table(args: argparse.Namespace) -> dict[str, Any] | str:
    """The ``[mqtt]``-like table of ``fleet``'s options, or why ``--broker`` is unusable."""
    import os

    broker = args.broker
    host, sep, port = broker.rpartition(":")
    if not sep or "]" in port:  # no port (an IPv6 address in brackets has colons inside)
        host, port = broker, "1883"
    host = host.strip("[]")
    if not host or not port.isdigit():
        return f"--broker must be HOST or HOST:PORT, got {broker!r}"
    table: dict[str, Any] = {"host": host, "port": int(port)}
    password = args.password or os.environ.get("OPERATION_DISPATCHER_MQTT_PASSWORD")
    options = {"prefix": args.prefix, "username": args.username, "password": password,
               "tls_ca": args.tls_ca, "tls_cert": args.tls_cert, "tls_key": args.tls_key}
    table.update({key: value for key, value in options.items() if value is not None})
    return table


def fleet_command(args: argparse.Namespace) -> int:
    """``fleet``: a live table of the controllers on a broker (``--json``: one snapshot)."""
    import json

    from .mqtt.settings import MqttSettings, mqtt_problems

    table = _broker_table(args)
    if isinstance(table, str):
        return _refuse(table)
    problems = mqtt_problems(table, "fleet")
    for number, name in (("wait", args.wait), ("interval", args.interval)):
        if not 0 < name <= 3600:
            problems.append((f"--{number}", "must be a number of seconds > 0 and <= 3600"))
    if problems:
        for key, rule in problems:
            print(f"{PROG}: {key.replace('fleet.', '--').replace('_', '-')}: {rule}",
                  file=sys.stderr)
        return 2
    try:
        from .mqtt import FleetView
        from .mqtt.fleet import render_table
    except ImportError as exc:
        return _refuse(exc)
    view = FleetView(MqttSettings(**table))
    view.start()
    try:
        if args.json:
            if not view.wait_subscribed(args.wait):
                print(f"{PROG}: no answer from the broker {args.broker} within {args.wait:g} s",
                      file=sys.stderr)
                return 1
            view.wait_quiet(0.3, args.wait)
            print(json.dumps(view.snapshot(), indent=2))
            return 0
        return _fleet_live(view, render_table, args.interval)
    finally:
        view.stop()


def _fleet_live(view: Any, render: Callable[[Any], str], interval: float) -> int:
    """Redraw the table when something changed, every ``interval`` s, until SIGINT/SIGTERM."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""
    shown = -1
    try:
        while not stop.is_set():
            if view.version != shown:
                shown = view.version
                stamp = datetime.now().strftime("%H:%M:%S")
                print(f"{clear}{PROG} fleet {stamp}\n{render(view.controllers())}\n", flush=True)
            stop.wait(interval)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def mcp_command(args: argparse.Namespace) -> int:
    """``operation-dispatcher mcp``: the MCP server over stdio until stdin closes (or SIGTERM)."""
    problem = _set_up_logging(args)  # basicConfig's stream is stderr
    if problem is not None:
        return _refuse(problem)
    try:
        import anyio

        from .mcp import create_mcp_server
    except ImportError as exc:
        return _refuse(exc)
    from .dispatcher import OperationDispatcher

    try:
        config = _core_settings(args)
    except ConfigError as exc:
        return _refuse(*exc.errors)
    try:
        dispatcher = OperationDispatcher(**config.dispatcher_kwargs())
    except (DispatcherError, ValueError) as exc:
        return _refuse(f"cannot create the dispatcher: {exc}")
    try:
        bridges = _build_bridges(dispatcher, config)
    except (DispatcherError, ImportError) as exc:
        print(f"{PROG}: cannot build the bridges: {exc}", file=sys.stderr)
        dispatcher.close()
        return 2
    server = create_mcp_server(dispatcher, bridges=bridges)
    dispatcher.subscribe(OperationLog(dispatcher))
    done = threading.Event()

    def serve_stdio() -> None:
        try:
            anyio.run(server.run_stdio_async)  # returns when the agent closes stdin
        except Exception:
            log.exception("the MCP stdio transport failed")
        finally:
            done.set()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("%s received: shutting down", signal.Signals(signum).name)
        done.set()

    # The transport runs on a daemon thread: its reader blocks in stdin's readline, which no
    # signal interrupts, so a SIGTERM must not wait for it (the process exits around it).
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        dispatcher.start()
        for bridge in bridges:
            bridge.start()
        log.info("MCP over stdio for %r (journal %s)", dispatcher.resource_id,
                 config.dispatcher_kwargs()["journal"] or "none (in memory)")
        threading.Thread(target=serve_stdio, name="operation-dispatcher-mcp[stdio]",
                         daemon=True).start()
        done.wait()
    except DispatcherError as exc:  # the journal cannot record the start, for one
        print(f"{PROG}: cannot start the dispatcher: {exc}", file=sys.stderr)
        status = 1
    finally:
        status = _shut_down(None, bridges, None, dispatcher) or status
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("stopped")
    return status


def check_config_command(args: argparse.Namespace) -> int:
    try:
        load_config(args.file)
    except ConfigError as exc:
        for error in exc.errors:
            print(error if error.startswith(args.file) else f"{args.file}: {error}")
        return 1
    print(f"{args.file}: OK")
    return 0


def _refuse(*problems: object) -> int:
    """Print each problem on stderr after the program's name; exit status 2 (nothing ran)."""
    for problem in problems:
        print(f"{PROG}: {problem}", file=sys.stderr)
    return 2


def _abandon(dispatcher: OperationDispatcher, problem: str) -> int:
    """``serve`` cannot go on after creating the dispatcher: say why, close it (and the journal
    ``serve`` opened), exit status 2."""
    status = _refuse(problem)
    _close(dispatcher)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "fleet":
        return fleet_command(args)
    if args.command == "gantt":
        return gantt_command(args, PROG)
    if args.command == "mcp":
        return mcp_command(args)
    return check_config_command(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
