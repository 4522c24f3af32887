"""CallbackRunner: named daemon threads that run request callbacks off the dispatcher thread.

A request callback is user code: it may block on a network call or never return at all. Running
it on one of these workers keeps the dispatcher thread, and every caller of the public API, free
to go on; the caller waits on the dispatcher's condition variable with the request's deadline
instead. A worker stuck inside a callback cannot be interrupted (Python has no way to kill a
thread), so the workers are daemon threads: ``stop()`` joins the idle ones and names the stuck
ones in the log, and the process can still exit.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

_STOP = object()


class CallbackRunner:
    """A pool of worker threads that grows when every worker is busy (or stuck)."""

    def __init__(
        self,
        name: str,
        log: logging.Logger | None = None,
        keep_idle: Callable[[], bool] | None = None,
    ) -> None:
        self._name = name
        self._log = log or logger
        # asked on every submit: False runs the job on a thread of its own that ends with it, so
        # a stopped dispatcher keeps no idle worker alive after, say, a cancel's handshake
        self._keep_idle = keep_idle or (lambda: True)
        self._one_shots: set[threading.Thread] = set()
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._waiting = 0  # workers blocked in get(), i.e. free to take a job
        self._queued = 0  # jobs put but not yet taken
        self._numbers = itertools.count(1)
        self._busy: set[threading.Thread] = set()  # workers inside a callback right now
        self._retired: set[threading.Thread] = set()  # abandoned by stop(): end after the job

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a worker; never blocks the caller."""
        if not self._keep_idle():
            self._run_once(fn, args)
            return
        with self._lock:
            self._queued += 1
            self._jobs.put((fn, args))
            if self._queued > self._waiting:
                thread = threading.Thread(
                    target=self._work,
                    name=f"{self._name}-{next(self._numbers)}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()

    def _run_once(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Run one job on a thread of its own, outside the pool; the thread ends with it."""

        def once() -> None:
            try:
                fn(*args)
            except Exception:  # the jobs handle their own errors; this is a last guard
                self._log.exception("callback job %r failed", fn)
            finally:
                with self._lock:
                    self._one_shots.discard(threading.current_thread())

        with self._lock:
            thread = threading.Thread(
                target=once, name=f"{self._name}-{next(self._numbers)}", daemon=True
            )
            self._one_shots.add(thread)
        thread.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._waiting += 1
            job = self._jobs.get()
            with self._lock:
                self._waiting -= 1
                self._queued -= 1
            if job is _STOP:
                return
            fn, args = job
            me = threading.current_thread()
            with self._lock:
                self._busy.add(me)
            try:
                fn(*args)
            except Exception:  # the jobs handle their own errors; this is a last guard
                self._log.exception("callback job %r failed", fn)
            with self._lock:
                self._busy.discard(me)
                if me in self._retired:  # stop() gave up on this worker: end it now
                    self._retired.discard(me)
                    return

    @property
    def threads(self) -> list[threading.Thread]:
        """The worker threads still alive."""
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            return list(self._threads)

    def stop(self, timeout: float | None = 5.0) -> list[str]:
        """Stop every idle worker; return the names of workers still stuck in a callback."""
        threads = self.threads
        with self._lock:
            one_shots = [t for t in self._one_shots if t is not threading.current_thread()]
            for _ in threads:
                self._queued += 1
                self._jobs.put(_STOP)
        deadline = None if timeout is None else time.monotonic() + timeout
        me = threading.current_thread()  # stop() called from a request callback: retire it
        for thread in threads:
            if thread is not me:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        for thread in one_shots:  # each ends with its job; wait for them like for the pool
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in (*threads, *one_shots) if t.is_alive() and t is not me]
        for name in stuck:
            self._log.warning("request callback on thread %s never returned; abandoned", name)
        with self._lock:
            # Drop the stop markers meant for the stuck threads, so a later submit does not
            # stop a fresh worker; a stuck thread is retired instead, and ends as soon as its
            # callback returns (until then it is a daemon thread and dies with the process).
            retire = [t for t in threads if t in self._busy]
            self._retired.update(retire)
            to_drop = len(retire)
            leftovers = []
            while True:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP and to_drop > 0:
                    to_drop -= 1
                else:
                    leftovers.append(item)
                self._queued -= 1
            for item in leftovers:
                self._queued += 1
                self._jobs.put(item)
            self._threads = [t for t in self._threads if t.is_alive()]
        return stuck


__all__ = ["CallbackRunner"]
