"""The ``operation-dispatcher`` command (also ``python -m operation_dispatcher``).

    operation-dispatcher serve [--config FILE] [--resource-id ID] [--host H] [--port P]
                               [--journal PATH|:memory:] [--token T] [--demo]
    operation-dispatcher check-config FILE

``serve`` runs one dispatcher, its hardware bridges (``[[bridges]]`` of the config) and its REST
API (waitress) until SIGINT or SIGTERM, then stops the server, the bridges, the dispatcher and
the journal, and exits 0. Command-line options win over the config file; the token may also
come from ``OPERATION_DISPATCHER_TOKEN``. ``--demo`` attaches a simulated machine and feeds it a
trickle of operations, approved by a simulated operator (with an occasional denial), so the API
shows live traffic; with a bridge whose device a plug-in can simulate (a Modbus executor bridge
on a loopback address, for one), the demo simulates that device (see :mod:`.demo`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .config import Config, ConfigError, load_config
from .demo import LOOPBACK, DemoMachine, DemoUnavailable
from .errors import DispatcherError

if TYPE_CHECKING:
    from .dispatcher import OperationDispatcher

log = logging.getLogger(__name__)
PROG = "operation-dispatcher"


# ------------------------------------------------------------------------------ commands


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Queue, dispatch and supervise the operations of one resource."
    )
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
    serve.add_argument("--log-level", default="INFO", metavar="LEVEL",
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       help="DEBUG, INFO (default), WARNING or ERROR")
    check = commands.add_parser(
        "check-config", help="validate a configuration file and list every error",
    )
    check.add_argument("file", metavar="FILE")
    return parser


def _settings(args: argparse.Namespace) -> Config:
    """The config file (or the defaults) with the command-line options applied."""
    from .http import token_from_env

    config = load_config(args.config) if args.config else Config()
    dispatcher, journal, http = config.dispatcher, config.journal, config.http
    if args.resource_id is not None:
        dispatcher = dataclasses.replace(dispatcher, resource_id=args.resource_id)
    if args.journal is not None:
        journal = dataclasses.replace(journal, path=args.journal)
    if args.host is not None:
        http = dataclasses.replace(http, host=args.host)
    if args.port is not None:
        http = dataclasses.replace(http, port=args.port)
    token = args.token or token_from_env() or http.token
    http = dataclasses.replace(http, token=token)
    return dataclasses.replace(config, dispatcher=dispatcher, journal=journal, http=http)


def serve(args: argparse.Namespace) -> int:
    try:
        from .http import ApiServer, create_app
        from .http.server import raise_open_file_limit
    except ImportError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    from .dispatcher import OperationDispatcher

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("transitions").setLevel(max(logging.WARNING, logging.getLevelName(args.log_level)))
    try:
        config = _settings(args)
    except ConfigError as exc:
        for error in exc.errors:
            print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    if args.port is not None and not 0 <= args.port <= 65535:
        print(f"{PROG}: --port must be from 0 to 65535", file=sys.stderr)
        return 2
    demo = DemoMachine() if args.demo else None
    kwargs = config.dispatcher_kwargs()
    if demo is not None:
        kwargs["on_request_callback"] = demo.on_request
    try:
        dispatcher = OperationDispatcher(**kwargs)
    except (DispatcherError, ValueError) as exc:
        print(f"{PROG}: cannot create the dispatcher: {exc}", file=sys.stderr)
        return 2
    try:
        bridges = _build_bridges(dispatcher, config)
    except (DispatcherError, ImportError) as exc:
        print(f"{PROG}: cannot build the bridges: {exc}", file=sys.stderr)
        dispatcher.close()
        return 2
    http = config.http
    try:
        app = create_app(
            dispatcher, token=http.token, tokens=http.tokens, max_body_bytes=http.max_body_bytes,
            stream_buffer_bytes=http.stream_buffer_bytes,
            heartbeat_seconds=http.heartbeat_seconds, max_event_streams=http.max_event_streams,
            bridges=bridges, signal_max_age_seconds=http.signal_max_age_seconds,
        )
    except ValueError as exc:  # e.g. --token repeats a named token of [http.tokens]
        print(f"{PROG}: cannot serve: {exc}", file=sys.stderr)
        dispatcher.close()
        return 2
    raise_open_file_limit(http.connection_limit + 64)  # each socket is a file descriptor
    try:
        server = ApiServer(
            app, http.host, http.port, threads=http.threads,
            connection_limit=http.connection_limit,
            idle_timeout_seconds=http.idle_timeout_seconds,
            write_timeout_seconds=http.write_timeout_seconds,
        )
    except OSError as exc:
        print(f"{PROG}: cannot listen on {http.host}:{http.port}: {exc}", file=sys.stderr)
        dispatcher.close()
        return 1

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("%s received: shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
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
        journal = kwargs["journal"] or "none (in memory)"
        print(
            f"{PROG}: serving {dispatcher.resource_id!r} on {url} "
            f"(API docs {url}/apidocs, events {url}/events/stream, journal {journal})",
            flush=True,
        )
        for bridge in bridges:
            log.info("bridge %s: %s bridge to %s", bridge.name, bridge.kind, bridge.endpoint)
        if http.host not in LOOPBACK and not (http.token or http.tokens):
            log.warning("serving %s without a token: anyone who can reach it may use it", url)
        stop.wait()
    except (OSError, DemoUnavailable) as exc:  # the demo's PLC cannot listen, for one
        print(f"{PROG}: {exc}", file=sys.stderr)
        status = 1
    finally:
        # A second SIGINT/SIGTERM while shutting down only sets ``stop`` again: the handlers
        # stay until everything is stopped, so a shutdown never ends in a traceback.
        status = _shut_down(server, bridges, demo, dispatcher) or status
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print(f"{PROG}: stopped", flush=True)
    return status


def _shut_down(
    server: Any, bridges: list[Any], demo: DemoMachine | None, dispatcher: OperationDispatcher
) -> int:
    """Stop the server, the bridges, the demo and the dispatcher, each even if one before
    failed; a failure is one line on stderr (no traceback) and makes the exit status 1."""
    steps: list[tuple[str, Callable[[], object]]] = [("the HTTP server", server.stop)]
    steps += [(f"bridge {bridge.name}", bridge.stop) for bridge in bridges]
    if demo is not None:
        steps.append(("the demo", demo.stop))
    steps.append(("the dispatcher", lambda: dispatcher.close(timeout=10.0)))
    status = 0
    for what, stop_it in steps:
        try:
            stop_it()
        except Exception as exc:
            log.debug("stopping %s failed", what, exc_info=True)
            print(f"{PROG}: {what} did not stop cleanly: {exc}", file=sys.stderr)
            status = 1
    return status


def _build_bridges(dispatcher: OperationDispatcher, config: Config) -> list[Any]:
    """The bridges of the config's ``[[bridges]]`` tables (built, not started)."""
    if not config.bridges:
        return []
    from .bridges import build_bridges

    return build_bridges(dispatcher, config.bridges)


def check_config_command(args: argparse.Namespace) -> int:
    try:
        load_config(args.file)
    except ConfigError as exc:
        for error in exc.errors:
            print(error if error.startswith(args.file) else f"{args.file}: {error}")
        return 1
    print(f"{args.file}: OK")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return check_config_command(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
