"""``/dispatcher...``: the dispatcher's state, and start, stop, pause and resume over HTTP.

The answers keep the original's shape ``{"message", "state"}`` (also for a refusal, 409); a
refusal also carries the envelope's ``error`` and ``code``. Start and stop answer 202, pause
and resume 200, as in the original; a start the journal cannot record answers 503
(``journal_unavailable``, the status of JournalError everywhere) and leaves the loop stopped.
``state`` is the dispatcher's state plus ``runtime_thread_alive`` and ``runtime_last_error``.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from ..errors import DispatcherError, JournalError
from .errors import status_of
from .openapi_types import Responses
from .schemas import OperationDispatcherRuntimeActionResponse, OperationDispatcherState
from .state import api_blueprint, api_state, json_response

if TYPE_CHECKING:
    from ..dispatcher import OperationDispatcher

log = logging.getLogger(__name__)
TAG = Tag(name="Dispatcher Runtime", description="the dispatcher loop: state, start, stop, pause")


class RuntimeControl:
    """Starts and stops the dispatcher for the API; one per app.

    ``dispatcher.start()`` runs the loop on the dispatcher's own named thread, so there is no
    second controller thread to disagree with (the original's two controllers could).
    """

    def __init__(self, dispatcher: OperationDispatcher, stop_timeout: float = 10.0) -> None:
        self._dispatcher = dispatcher
        self._stop_timeout = stop_timeout
        self._lock = threading.Lock()  # one start or stop at a time
        self.last_error: str | None = None

    def state_payload(self) -> dict[str, Any]:
        payload = self._dispatcher.get_state().to_dict()
        payload["runtime_thread_alive"] = self._dispatcher.is_running
        payload["runtime_last_error"] = self.last_error
        return payload

    def _answer(self, status: int, message: str, code: str | None = None) -> Response:
        body: dict[str, Any] = {"message": message, "state": self.state_payload()}
        if code is not None:
            body["error"] = message
            body["code"] = code
        return json_response(body, status)

    def start(self) -> Response:
        with self._lock:
            if self._dispatcher.is_running:
                return self._answer(409, "operation dispatcher is already running",
                                    "dispatcher_already_running")
            try:
                self._dispatcher.start()
            except JournalError as exc:  # not running; a later start may succeed
                self.last_error = str(exc)
                log.error("the dispatcher failed to start: %s", exc)
                status, code = status_of(exc)
                return self._answer(status, f"operation dispatcher failed to start: {exc}", code)
            except RuntimeError as exc:  # started by someone else between the check and here
                if self._dispatcher.is_running:
                    return self._answer(409, "operation dispatcher is already running",
                                        "dispatcher_already_running")
                self.last_error = str(exc)
                log.exception("the dispatcher failed to start")
                return self._answer(500, "operation dispatcher failed to start", "start_failed")
            self.last_error = None
            return self._answer(202, "operation dispatcher started")

    def stop(self) -> Response:
        with self._lock:
            if not self._dispatcher.is_running:
                return self._answer(409, "operation dispatcher is not running",
                                    "dispatcher_not_running")
            try:
                self._dispatcher.stop(timeout=self._stop_timeout)
            except DispatcherError as exc:  # ThreadDidNotStop; the status is the table's
                self.last_error = str(exc)
                log.error("the dispatcher did not stop: %s", exc)
                status, _code = status_of(exc)
                return self._answer(status, "operation dispatcher failed to stop", "stop_failed")
            return self._answer(202, "operation dispatcher stopped")

    def pause(self) -> Response:
        if not self._dispatcher.pause_dispatcher_runtime():
            return self._answer(409, "operation dispatcher is already paused",
                                "dispatcher_already_paused")
        return self._answer(200, "operation dispatcher paused")

    def resume(self) -> Response:
        if not self._dispatcher.resume_dispatcher_runtime():
            return self._answer(409, "operation dispatcher is not paused",
                                "dispatcher_not_paused")
        return self._answer(200, "operation dispatcher resumed")


#: The ``/dispatcher`` routes, shared by every app; each view reads its app's runtime control.
runtime_blueprint: APIBlueprint = api_blueprint("runtime", __name__, TAG)
_ACTION = OperationDispatcherRuntimeActionResponse
_REFUSED: Responses = {409: _ACTION}


def _runtime() -> RuntimeControl:
    return api_state().runtime


@runtime_blueprint.get("/dispatcher", operation_id="get_dispatcher_state",
                       summary="The dispatcher's state",
                       responses={200: OperationDispatcherState})
def get_dispatcher_state() -> Response:
    return json_response(_runtime().state_payload())


@runtime_blueprint.post(
    "/dispatcher/start", operation_id="start_operation_dispatcher",
    summary="Start the dispatcher loop (202); 503 if the journal cannot record it",
    responses={202: _ACTION, **_REFUSED, 503: _ACTION},
)
def start_operation_dispatcher() -> Response:
    return _runtime().start()


@runtime_blueprint.post(
    "/dispatcher/stop", operation_id="stop_operation_dispatcher",
    summary="Stop the dispatcher loop (202); queued operations stay queued",
    responses={202: _ACTION, **_REFUSED},
)
def stop_operation_dispatcher() -> Response:
    return _runtime().stop()


@runtime_blueprint.post(
    "/dispatcher/pause", operation_id="pause_operation_dispatcher",
    summary="Start no new operations (the current one goes on)",
    responses={200: _ACTION, **_REFUSED},
)
def pause_operation_dispatcher() -> Response:
    return _runtime().pause()


@runtime_blueprint.post(
    "/dispatcher/resume", operation_id="resume_operation_dispatcher",
    summary="Start operations again; clears every retry count and cooldown",
    responses={200: _ACTION, **_REFUSED},
)
def resume_operation_dispatcher() -> Response:
    return _runtime().resume()


__all__ = ["RuntimeControl", "runtime_blueprint"]
