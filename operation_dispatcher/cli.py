"""The ``operation-dispatcher`` command (also ``python -m operation_dispatcher``).

    operation-dispatcher serve [--config FILE] [--resource-id ID] [--host H] [--port P]
                               [--journal PATH|:memory:] [--token T] [--demo]
    operation-dispatcher check-config FILE

``serve`` runs one dispatcher and its REST API (waitress) until SIGINT or SIGTERM, then stops the
server, the dispatcher and the journal, and exits 0. Command-line options win over the config
file; the token may also come from ``OPERATION_DISPATCHER_TOKEN``. ``--demo`` attaches a
simulated machine and feeds it a trickle of operations, approved by a simulated operator (with
an occasional denial), so the API shows live traffic.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import queue
import random
import signal
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .approvals import PENDING
from .config import Config, ConfigError, load_config
from .errors import DispatcherError, RequestClosed, UnknownRequest
from .models import DispatchEvent, EventType, Operation

if TYPE_CHECKING:
    from .dispatcher import OperationDispatcher

log = logging.getLogger(__name__)
PROG = "operation-dispatcher"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


# ------------------------------------------------------------------------------ the demo


class DemoMachine:
    """A simulated machine, a trickle of operations and an operator who approves them.

    Start requests are left PENDING and answered by the "operator" thread a moment later (so
    ``GET /requests`` shows them and you may answer first); every ``deny_every``-th one is
    denied, which shows the denial, its cooldown and the retry. Cancel, pause and resume are
    approved at once.
    """

    TASKS = (("pick", 2.0), ("place", 1.5), ("inspect", 3.0), ("weld", 4.0), ("polish", 2.5))
    SIGNAL = "demo.door_closed"

    def __init__(
        self, *, interval: float = 2.0, answer_after: float = 0.8, deny_every: int = 7,
        max_queued: int = 8, seed: int | None = None,
    ) -> None:
        self.interval = interval
        self.answer_after = answer_after
        self.deny_every = deny_every
        self.max_queued = max_queued
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._requests: queue.Queue[Any] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._runner: Any = None
        self._asked = 0

    def on_request(self, event: DispatchEvent) -> Any:
        """The dispatcher's request callback."""
        if event.event_type is EventType.OPERATION_START_REQUESTED:
            self._requests.put(event.id)
            return PENDING
        return True

    def start(self, dispatcher: OperationDispatcher) -> None:
        from .simulation import SimulatedOperationRunner

        self._runner = SimulatedOperationRunner(dispatcher=dispatcher, name="demo-machine")
        self._runner.start_worker()
        for name, target in (("feeder", self._feed), ("operator", self._operate)):
            thread = threading.Thread(
                target=target, args=(dispatcher,), name=f"{PROG}-demo-{name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._requests.put(None)
        for thread in self._threads:
            thread.join(5.0)
        if self._runner is not None:
            self._runner.stop()

    def _feed(self, dispatcher: OperationDispatcher) -> None:
        rng, cycle = self._rng, 0
        dispatcher.signals.set(self.SIGNAL, True)
        while not self._stop.is_set():
            cycle += 1
            if cycle % 5 == 0:  # the door opens and closes now and then
                dispatcher.signals.set(self.SIGNAL, not dispatcher.signals.value(self.SIGNAL))
            try:
                if dispatcher.get_state().queue_size < self.max_queued:
                    task, seconds = rng.choice(self.TASKS)
                    dispatcher.add_operation(Operation(
                        resource_id=dispatcher.resource_id,
                        job_id=f"demo-{cycle}",
                        payload={"task": task, "part": rng.randint(100, 999)},
                        priority=rng.randint(0, 5),
                        planned_duration=round(seconds * rng.uniform(0.7, 1.3), 2),
                        release_conditions={self.SIGNAL: True} if rng.random() < 0.3 else {},
                    ))
            except DispatcherError as exc:
                log.warning("demo: could not add an operation: %s", exc)
            self._stop.wait(self.interval * rng.uniform(0.5, 1.5))

    def _operate(self, dispatcher: OperationDispatcher) -> None:
        while not self._stop.is_set():
            request_id = self._requests.get()
            if request_id is None or self._stop.wait(self.answer_after):
                return
            self._asked += 1
            deny = self.deny_every > 0 and self._asked % self.deny_every == 0
            try:
                if deny:
                    dispatcher.decide(request_id, False, "demo operator: tool change, retry soon")
                else:
                    dispatcher.decide(request_id, True, "demo operator: go")
            except (UnknownRequest, RequestClosed):
                pass  # answered through the API first, or timed out


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
    http = config.http
    app = create_app(
        dispatcher, token=http.token, max_body_bytes=http.max_body_bytes,
        heartbeat_seconds=http.heartbeat_seconds, max_event_streams=http.max_event_streams,
    )
    try:
        server = ApiServer(app, http.host, http.port, threads=http.threads)
    except OSError as exc:
        print(f"{PROG}: cannot listen on {http.host}:{http.port}: {exc}", file=sys.stderr)
        dispatcher.close()
        return 1

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("%s received: shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        dispatcher.start()
        if demo is not None:
            demo.start(dispatcher)
        server.start()
        url = server.url
        journal = kwargs["journal"] or "none (in memory)"
        print(
            f"{PROG}: serving {dispatcher.resource_id!r} on {url} "
            f"(API docs {url}/apidocs, events {url}/events/stream, journal {journal})",
            flush=True,
        )
        if http.host not in _LOOPBACK and not http.token:
            log.warning("serving %s without a token: anyone who can reach it may use it", url)
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
        if demo is not None:
            demo.stop()
        dispatcher.close(timeout=10.0)
    print(f"{PROG}: stopped", flush=True)
    return 0


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
