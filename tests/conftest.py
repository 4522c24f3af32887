"""Shared fixtures: a thread-leak guard, a dispatcher factory and an event recorder.

Tests synchronise on events and conditions, never on sleeps: :class:`EventRecorder` collects
every event a dispatcher emits (``*_REQUESTED`` ones included) and ``wait_for`` blocks on a
condition variable until the events a test expects have arrived.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import configuration as hypothesis_configuration

from operation_dispatcher import (
    PENDING,
    DispatchEvent,
    EventType,
    Operation,
    OperationDispatcher,
)

RESOURCE = "robot-1"
THREAD_GRACE_SECONDS = 2.0

# Hypothesis keeps an example database and caches under ./.hypothesis by default; tests must not
# write outside a temporary folder, so point it at one that is removed when the run ends.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="operation-dispatcher-hypothesis-")
hypothesis_configuration.set_hypothesis_home_dir(_HYPOTHESIS_HOME)
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, True)

EventMatch = EventType | Callable[[DispatchEvent], bool]


def op(**fields: Any) -> Operation:
    """An Operation of the test resource (``RESOURCE``) unless ``resource_id`` says otherwise."""
    fields.setdefault("resource_id", RESOURCE)
    return Operation(**fields)


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """Fail the test if a thread it started is still alive ~2 s after it ended."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_GRACE_SECONDS
    leaked = []
    for thread in threading.enumerate():
        if thread in before or thread is threading.current_thread():
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            leaked.append(thread.name)
    if leaked:
        pytest.fail(f"threads still alive after the test: {sorted(leaked)}", pytrace=False)


class EventRecorder:
    """Records every event of a dispatcher (requests included), in delivery order."""

    def __init__(self, dispatcher: OperationDispatcher) -> None:
        self._cond = threading.Condition()
        self._events: list[DispatchEvent] = []
        self.threads: list[str] = []
        self.unsubscribe = dispatcher.subscribe(self._on_event, include_requests=True)

    def _on_event(self, event: DispatchEvent) -> None:
        with self._cond:
            self._events.append(event)
            self.threads.append(threading.current_thread().name)
            self._cond.notify_all()

    @property
    def events(self) -> list[DispatchEvent]:
        with self._cond:
            return list(self._events)

    def types(self, operation_id: Any = None) -> list[EventType]:
        """Event types in order, optionally only those of one operation."""
        return [
            e.event_type
            for e in self.events
            if operation_id is None or e.operation_id == operation_id
        ]

    @staticmethod
    def _matcher(match: EventMatch, operation_id: Any) -> Callable[[DispatchEvent], bool]:
        if isinstance(match, EventType):
            def by_type(event: DispatchEvent) -> bool:
                return event.event_type is match and (
                    operation_id is None or event.operation_id == operation_id
                )
            return by_type
        return match

    def matching(self, match: EventMatch, operation_id: Any = None) -> list[DispatchEvent]:
        test = self._matcher(match, operation_id)
        return [e for e in self.events if test(e)]

    def wait_for(
        self,
        match: EventMatch,
        count: int = 1,
        timeout: float = 5.0,
        operation_id: Any = None,
    ) -> list[DispatchEvent]:
        """Block until ``count`` events match (an EventType or a predicate); return them all."""
        test = self._matcher(match, operation_id)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self._events if test(e)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [e.event_type.value for e in self._events]
                    raise AssertionError(
                        f"timed out after {timeout} s waiting for {count} x {match!r}; "
                        f"got {len(found)}; events so far: {seen}"
                    )
                self._cond.wait(remaining)


class PendingCallback:
    """An ``on_request_callback`` that leaves every request PENDING (an operator, or an agent,
    answers it) and remembers the events it was given."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.seen: list[Any] = []

    def __call__(self, event: Any) -> Any:
        with self.cond:
            self.seen.append(event)
            self.cond.notify_all()
        return PENDING

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[Any]:
        """The first ``count`` requests, once they have been asked."""
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.seen) >= count, timeout), self.seen
            return self.seen[:count]


def wait_until(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it is truthy (bounded); return its value.

    Only for state nothing notifies about (counters, a bridge's health flag, staleness): where
    an event or a signal change can be awaited, use :class:`EventRecorder` or :func:`wait_signal`.
    """
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.005)
    return result


def wait_signal(dispatcher: OperationDispatcher, name: str, value: Any, timeout: float = 5.0) -> None:
    """Block until the signal ``name`` is fresh and holds ``value`` (woken by the board)."""
    board = dispatcher.signals
    cond = threading.Condition()

    def wake(_signal: Any) -> None:
        with cond:
            cond.notify_all()

    unsubscribe = board.subscribe(wake)
    deadline = time.monotonic() + timeout
    try:
        with cond:
            while not board.holds(name, value):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"{name} never became {value!r}: {board.get(name)}"
                cond.wait(remaining)
    finally:
        unsubscribe()


ENVELOPE_KEYS = {"error", "message", "code"}


def assert_error(response: Any, status: int, code: str, **details: Any) -> dict[str, Any]:
    """The response is the API's error envelope with this status and code (and these details)."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert ENVELOPE_KEYS <= set(body) <= ENVELOPE_KEYS | {"details"}, body
    assert body["code"] == code, body
    assert body["error"] == body["message"] and body["message"]
    for key, value in details.items():
        assert body["details"][key] == value, body
    return body


@pytest.fixture
def make_dispatcher() -> Iterator[Callable[..., OperationDispatcher]]:
    """Build ``OperationDispatcher("robot-1", **kwargs)``; every one is closed at teardown
    (stopped, and a journal it opened from a path released)."""
    made: list[OperationDispatcher] = []

    def factory(**kwargs: Any) -> OperationDispatcher:
        dispatcher = OperationDispatcher(RESOURCE, **kwargs)
        made.append(dispatcher)
        return dispatcher

    yield factory
    for dispatcher in reversed(made):
        dispatcher.close(timeout=5.0)


@pytest.fixture
def make_recorder() -> Callable[[OperationDispatcher], EventRecorder]:
    """``make_recorder(dispatcher)`` -> an :class:`EventRecorder` subscribed to it."""
    return EventRecorder


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An Event set at teardown: callbacks that must hang "forever" wait on it."""
    event = threading.Event()
    yield event
    event.set()


# ------------------------------------------------------------------------- the REST API


class LiveApi:
    """A dispatcher's REST API served by waitress on a free loopback port, and a client."""

    def __init__(self, dispatcher: OperationDispatcher, app: Any, server: Any) -> None:
        import requests

        self.dispatcher = dispatcher
        self.app = app
        self.server = server
        self.url = server.url
        self.session = requests.Session()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.request("PUT", path, **kwargs)

    def add(self, *items: dict[str, Any]) -> list[dict[str, Any]]:
        """POST /operations/add; the stored operations (asserts 201)."""
        response = self.post("/operations/add", json=list(items) or [{"payload": {}}])
        assert response.status_code == 201, response.text
        return [status["operation"] for status in response.json()]

    def close(self) -> None:
        self.session.close()
        self.server.stop()


@pytest.fixture
def make_api(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> Iterator[Callable[..., LiveApi]]:
    """``make_api(dispatcher=None, start=True, **create_app_kwargs)`` -> a :class:`LiveApi`.

    The dispatcher (a new one from ``make_dispatcher`` unless given) is started unless
    ``start=False``; server and client are closed at teardown, before the dispatchers stop.
    """
    from operation_dispatcher.http import ApiServer, create_app

    made: list[LiveApi] = []

    def factory(
        dispatcher: OperationDispatcher | None = None, *, start: bool = True, **kwargs: Any
    ) -> LiveApi:
        dispatcher = dispatcher or make_dispatcher()
        if start and not dispatcher.is_running:
            dispatcher.start()
        kwargs.setdefault("heartbeat_seconds", 0.2)
        app = create_app(dispatcher, **kwargs)
        server = ApiServer(app, "127.0.0.1", 0, threads=8)
        server.start()
        api = LiveApi(dispatcher, app, server)
        made.append(api)
        deadline = time.monotonic() + 10
        while api.get("/health").status_code != 200:  # bounded: the socket is bound already
            assert time.monotonic() < deadline, "the server never answered /health"
        return api

    yield factory
    for api in reversed(made):
        api.close()


class ClientResponse:
    """A Flask test response with the parts of ``requests.Response`` the tests read."""

    def __init__(self, response: Any) -> None:
        self.wsgi = response  # the werkzeug response itself (schemathesis validates it)
        self.status_code: int = response.status_code
        self.headers = response.headers
        self.content: bytes = response.get_data()

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        import json

        return json.loads(self.content)


class ClientApi:
    """A dispatcher's REST API called through Flask's ``test_client`` (no server, no socket),
    with :class:`LiveApi`'s interface: for every test but those of the server itself."""

    def __init__(self, dispatcher: OperationDispatcher, app: Any) -> None:
        self.dispatcher = dispatcher
        self.app = app
        self.client = app.test_client()

    def request(self, method: str, path: str, **kwargs: Any) -> ClientResponse:
        kwargs.pop("timeout", None)
        if "params" in kwargs:
            kwargs["query_string"] = kwargs.pop("params")
        response = self.client.open(path, method=method, buffered=True, **kwargs)
        response.close()  # buffered: the body is kept; the file a static route opened is not
        return ClientResponse(response)

    def get(self, path: str, **kwargs: Any) -> ClientResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> ClientResponse:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> ClientResponse:
        return self.request("PUT", path, **kwargs)

    def add(self, *items: dict[str, Any]) -> list[dict[str, Any]]:
        """POST /operations/add; the stored operations (asserts 201)."""
        response = self.post("/operations/add", json=list(items) or [{"payload": {}}])
        assert response.status_code == 201, response.text
        return [status["operation"] for status in response.json()]


@pytest.fixture
def make_client(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> Callable[..., ClientApi]:
    """``make_client(dispatcher=None, start=True, **create_app_kwargs)`` -> a :class:`ClientApi`.

    Like ``make_api`` but through Flask's test client: no server thread, no socket. The
    dispatcher (a new one from ``make_dispatcher`` unless given) is started unless
    ``start=False`` and stopped at teardown by ``make_dispatcher``.
    """
    from operation_dispatcher.http import create_app

    def factory(
        dispatcher: OperationDispatcher | None = None, *, start: bool = True, **kwargs: Any
    ) -> ClientApi:
        dispatcher = dispatcher or make_dispatcher()
        if start and not dispatcher.is_running:
            dispatcher.start()
        kwargs.setdefault("heartbeat_seconds", 0.2)
        return ClientApi(dispatcher, create_app(dispatcher, **kwargs))

    return factory


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``serve(*args, env=None)`` -> a :class:`served.Served` server in ``tmp_path``; killed
    at teardown if a test left it running."""
    from served import Served

    started: list[Served] = []

    def factory(*args: str, env: dict[str, str] | None = None) -> Served:
        served = Served(list(args), tmp_path, env)
        started.append(served)
        return served

    yield factory
    for served in started:
        if served.proc.poll() is None:  # a test failed half-way: do not leave it running
            served.proc.kill()
            served.proc.communicate(timeout=30)


@pytest.fixture
def make_sim() -> Iterator[Callable[..., Any]]:
    """``make_sim(**kwargs)``: a started SerialDeviceSimulator on a free loopback port (its
    ``alive`` signal, repeated each second, says the device is alive); stopped at teardown."""
    from firmware_bridges.simulators.serial_device import SerialDeviceSimulator

    made: list[SerialDeviceSimulator] = []

    def factory(**kwargs: Any) -> SerialDeviceSimulator:
        kwargs.setdefault("signals", {"alive": 1})
        sim = SerialDeviceSimulator(**kwargs)
        sim.listen_tcp()
        made.append(sim.start())
        return sim

    yield factory
    for sim in made:
        sim.stop()


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``make_broker(**kwargs)`` -> a started :class:`~operation_dispatcher.mqtt.localbroker.
    LocalBroker` (a real mosquitto on a free loopback port, its config and data in tmp_path);
    every one is stopped by its pid at teardown."""
    from operation_dispatcher.mqtt.localbroker import LocalBroker

    started: list[Any] = []

    def factory(**kwargs: Any) -> Any:
        broker = LocalBroker(tmp_path / f"broker-{len(started)}", **kwargs)
        started.append(broker)
        return broker.start()

    yield factory
    for broker in started:
        broker.stop()
