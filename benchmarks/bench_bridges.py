"""Firmware bridges: PLC flip -> start request, Modbus polling CPU, serial DONE -> COMPLETED.

(1) ``bridges.plc_flip_to_start_requested``: a :class:`PlcSimulator` (a real pymodbus TCP server
    on 127.0.0.1, on a thread of this process) and a :class:`ModbusBridge` polling its ready
    discrete input every POLL_INTERVAL s; one operation held by ``release_conditions={"plc1.ready":
    True}``. Each repetition: ready False, wait until the bridge has seen it, add the operation,
    wait until the dispatcher holds it on the release condition, sleep a random fraction of a poll
    interval (so the flip lands at a random poll phase), read ``perf_counter``, ``set_ready(True)``;
    the request callback reads ``perf_counter`` when OPERATION_START_REQUESTED reaches it and
    approves; the operation is then completed. p50/p95/max over REPEAT_FLIP repetitions.
    Baseline, same procedure: a stdlib thread that reads a flag every POLL_INTERVAL s (waiting on
    an Event, as the bridge does) and notifies a ``threading.Condition`` on a change; the time
    is read when the waiting thread wakes up. It shows the latency inherent in polling.
    Target (issue): p95 <= poll interval + 5 ms.

(2) ``bridges.modbus_poll_cpu``: a Modbus TCP server with 32 holding registers runs in a separate
    process (its CPU is not ours); in this process a started dispatcher and a ModbusBridge with 32
    holding-register signals (addresses 0..31, one request per poll) at poll_interval 0.1 s.
    After a warm-up, the process CPU time over CPU_WINDOW s, as % of one core.
    Baseline: a stdlib client (socket + struct, the Modbus TCP "read holding registers" frame for
    32 registers) polling the same server at the same pace for the same window.
    Target (issue): <= 2 % of a core.

(3) ``bridges.serial_done_to_completed``: a :class:`SerialDeviceSimulator` on a TCP port and a
    :class:`SerialLineBridge` (``socket://`` URL). Each repetition adds an operation with
    ``payload={"command": ...}``, waits until the simulator has received its RUN, reads
    ``perf_counter`` and sends ``DONE <id>``; a subscriber reads ``perf_counter`` when
    OPERATION_COMPLETED reaches it. Median / p95 over REPEAT_SERIAL.
    Baseline, sampled alternately: a stdlib TCP pair on 127.0.0.1 (TCP_NODELAY) where the main
    thread writes the same line and a reader thread blocked in ``readline()`` sets an Event.
    Target (issue): median <= 2 ms.

The module checks at the end that it left no thread and no child process behind.
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks.common import cpu_seconds, emit, percentile
from firmware_bridges.modbus import ModbusBridge
from firmware_bridges.serial_line import SerialLineBridge
from firmware_bridges.simulators.plc import PlcSimulator, free_port
from firmware_bridges.simulators.serial_device import SerialDeviceSimulator
from operation_dispatcher import DispatchEvent, EventType, Operation, OperationDispatcher

RESOURCE = "machine-1"
WAIT_SECONDS = 10.0
SETTLE_SECONDS = 0.001

POLL_INTERVAL = 0.02
REPEAT_FLIP = 100
WARMUP_FLIP = 5

CPU_POLL_INTERVAL = 0.1
CPU_REGISTERS = 32
CPU_WARMUP = 1.0
CPU_WINDOW = 5.0

REPEAT_SERIAL = 200
WARMUP_SERIAL = 10


def _wait_until(predicate: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.0005)



# ============================================================ (1) PLC flip -> START_REQUESTED


class PollProbe:
    """The baseline of (1): a thread polls a flag, a waiter thread wakes on a Condition."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.flag = False  # the "device"
        self.seen = False  # what the poller read last
        self.woke_at = 0.0
        self.arrived = threading.Event()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="baseline-poller", daemon=True)
        self._waiter = threading.Thread(target=self._wait, name="baseline-waiter", daemon=True)
        self._poller.start()
        self._waiter.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            value = self.flag
            if value != self.seen:
                with self._cond:
                    self.seen = value
                    self._cond.notify()

    def _wait(self) -> None:
        last = False
        with self._cond:
            while True:
                while self.seen == last and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                last = self.seen
                if last:
                    self.woke_at = time.perf_counter()
                    self.arrived.set()

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify()
        self._poller.join(5)
        self._waiter.join(5)


def baseline_flip_latencies(repeat: int, rng: random.Random) -> list[float]:
    """Flag set -> waiter awake, in ms, with the same reset / random-phase procedure as ours."""
    probe = PollProbe(POLL_INTERVAL)
    samples: list[float] = []
    try:
        for _ in range(repeat):
            probe.flag = False
            _wait_until(lambda: probe.seen is False, "the poller to see the flag clear")
            probe.arrived.clear()
            time.sleep(rng.uniform(0, POLL_INTERVAL))
            sent = time.perf_counter()
            probe.flag = True
            if not probe.arrived.wait(WAIT_SECONDS):
                raise RuntimeError("the baseline waiter never woke")
            samples.append((probe.woke_at - sent) * 1e3)
    finally:
        probe.close()
    return samples


def plc_flip_latencies(
    plc: PlcSimulator, repeat: int, warmup: int, rng: random.Random
) -> tuple[list[float], dict[str, Any]]:
    """set_ready(True) -> OPERATION_START_REQUESTED at the request callback, in ms."""
    arrived_at: dict[Any, float] = {}
    arrived = threading.Event()

    def on_request(event: DispatchEvent) -> bool:
        if event.event_type is EventType.OPERATION_START_REQUESTED:
            arrived_at[event.operation_id] = time.perf_counter()
            arrived.set()
        return True

    dispatcher = OperationDispatcher(RESOURCE, on_request_callback=on_request)
    bridge = ModbusBridge(
        dispatcher, "plc1", "127.0.0.1", plc.port, poll_interval=POLL_INTERVAL, timeout=1.0,
        signals={"ready": {"kind": "discrete_input", "address": PlcSimulator.READY_INPUT}},
    )
    signals = dispatcher.signals

    def ready_seen(value: bool) -> bool:
        signal = signals.get("plc1.ready")
        return signal is not None and signal.value is value

    samples: list[float] = []
    dispatcher.start()
    bridge.start()
    try:
        for i in range(warmup + repeat):
            plc.set_ready(False)
            _wait_until(lambda: ready_seen(False), "the bridge to see ready False")
            arrived.clear()
            op = dispatcher.add_operation(
                Operation(resource_id=RESOURCE, payload={"n": i},
                          release_conditions={"plc1.ready": True})
            )
            _wait_until(
                lambda op=op: "release_condition:plc1.ready" in dispatcher.explain(op.id)["blocked_by"],
                "the operation to be held by its release condition",
            )
            dispatcher.drain_events(WAIT_SECONDS)
            time.sleep(rng.uniform(0, POLL_INTERVAL))
            sent = time.perf_counter()
            plc.set_ready(True)
            if not arrived.wait(WAIT_SECONDS):
                raise RuntimeError("OPERATION_START_REQUESTED never arrived")
            if i >= warmup:
                samples.append((arrived_at[op.id] - sent) * 1e3)
            _wait_until(lambda op=op: dispatcher.current_operation is not None
                        and dispatcher.current_operation.id == op.id, "the operation to start")
            dispatcher.complete_operation(op.id)
            dispatcher.drain_events(WAIT_SECONDS)
        info = {"modbus_reads": bridge.counters["reads"], "bridge_errors": bridge.counters["errors"]}
    finally:
        bridge.stop(10)
        dispatcher.stop(10)
    return samples, info


def bench_plc_flip() -> None:
    with PlcSimulator(cycle_time=0.05) as plc:
        ours, info = plc_flip_latencies(plc, REPEAT_FLIP, WARMUP_FLIP, random.Random(1))
    base = baseline_flip_latencies(REPEAT_FLIP, random.Random(1))
    target_ms = POLL_INTERVAL * 1e3 + 5
    p95 = percentile(ours, 95)
    emit(
        "bridges.plc_flip_to_start_requested",
        p95,
        "ms",
        percentile(base, 95),
        target=f"<= {target_ms:g} ms",
        repeat=REPEAT_FLIP,
        poll_interval_ms=POLL_INTERVAL * 1e3,
        p50_ms=statistics.median(ours),
        max_ms=max(ours),
        baseline_p50_ms=statistics.median(base),
        baseline_max_ms=max(base),
        **info,
        desc="PlcSimulator.set_ready(True) -> OPERATION_START_REQUESTED at the request callback "
        "(ModbusBridge polling the discrete input, op held by release_conditions), p95; "
        "the flip lands at a random poll phase",
        baseline_desc="stdlib thread polling a flag at the same interval, Condition.notify -> "
        "waiter awake, same procedure, p95",
        target_rule="p95 <= poll interval + 5 ms",
    )


# ============================================================ (2) Modbus polling CPU

# A Modbus TCP server with 32 holding registers, for a child process: its CPU must not count.
# It exits when its stdin closes, so it cannot outlive this process even if we are killed.
_SERVER_SCRIPT = r"""
import asyncio, os, sys, threading
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType

def watch_parent():
    sys.stdin.buffer.read()
    os._exit(0)

async def main(port, count):
    def bits():
        return [SimData(0, count=16, values=False, datatype=DataType.BITS)]
    def regs():
        return [SimData(0, count=count, values=1234, datatype=DataType.REGISTERS)]
    device = SimDevice(1, simdata=(bits(), bits(), regs(), regs()), use_bit_addressing=True)
    server = ModbusTcpServer(device, address=("127.0.0.1", port))
    await server.serve_forever()

threading.Thread(target=watch_parent, daemon=True).start()
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def start_server(port: int, count: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER_SCRIPT, str(port), str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,  # our stdout carries JSON lines only
    )
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the Modbus server process exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            if time.monotonic() > deadline:
                stop_server(proc)
                raise RuntimeError(f"the Modbus server did not listen on port {port}") from None
            time.sleep(0.02)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def cpu_window() -> float:
    """Process CPU seconds over CPU_WINDOW seconds of the main thread sleeping."""
    start = cpu_seconds()
    time.sleep(CPU_WINDOW)
    return cpu_seconds() - start


def bridge_poll_cpu(port: int) -> tuple[float, int, int]:
    """(CPU-s in the window, Modbus requests in the window, requests per poll) for the bridge."""
    dispatcher = OperationDispatcher(RESOURCE)
    bridge = ModbusBridge(
        dispatcher, "plc1", "127.0.0.1", port, poll_interval=CPU_POLL_INTERVAL, timeout=1.0,
        signals={f"r{a}": {"kind": "holding_register", "address": a} for a in range(CPU_REGISTERS)},
    )
    dispatcher.start()
    bridge.start()
    try:
        _wait_until(lambda: bridge.counters["reads"] > 0, "the bridge's first poll")
        time.sleep(CPU_WARMUP)
        if dispatcher.signals.value(f"plc1.r{CPU_REGISTERS - 1}") != 1234:
            raise RuntimeError("the bridge did not read the registers")
        reads = bridge.counters["reads"]
        used = cpu_window()
        reads = bridge.counters["reads"] - reads
        per_poll = bridge.requests_per_poll
        if bridge.counters["errors"]:
            raise RuntimeError(f"the bridge had errors: {bridge.counters}")
    finally:
        bridge.stop(10)
        dispatcher.stop(10)
    return used, reads, per_poll


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the Modbus server closed the connection")
        data += chunk
    return data


def baseline_poll_cpu(port: int) -> tuple[float, int]:
    """(CPU-s in the window, requests in the window) for a socket + struct client at 10 Hz."""
    stop = threading.Event()
    polls = [0]
    failure: list[BaseException] = []
    sock = socket.create_connection(("127.0.0.1", port), timeout=1.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def poll_loop() -> None:
        tid = 0
        try:
            while not stop.is_set():
                tid = (tid + 1) & 0xFFFF
                # MBAP header (transaction, protocol 0, length 6, unit 1) + FC 3, address 0, count
                sock.sendall(struct.pack(">HHHBBHH", tid, 0, 6, 1, 3, 0, CPU_REGISTERS))
                header = _recv_exactly(sock, 9)
                rtid, _, length, _, fc, nbytes = struct.unpack(">HHHBBB", header)
                if rtid != tid or fc != 3 or nbytes != 2 * CPU_REGISTERS or length != 3 + nbytes:
                    raise RuntimeError(f"unexpected answer {header!r}")
                values = struct.unpack(f">{CPU_REGISTERS}H", _recv_exactly(sock, nbytes))
                if values[-1] != 1234:
                    raise RuntimeError(f"unexpected values {values}")
                polls[0] += 1
                if stop.wait(CPU_POLL_INTERVAL):
                    return
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=poll_loop, name="baseline-modbus-client", daemon=True)
    thread.start()
    try:
        _wait_until(lambda: polls[0] > 0 or failure, "the baseline's first poll")
        time.sleep(CPU_WARMUP)
        before = polls[0]
        used = cpu_window()
        count = polls[0] - before
    finally:
        stop.set()
        thread.join(5)
        sock.close()
    if failure:
        raise RuntimeError("the baseline client failed") from failure[0]
    return used, count


def bench_modbus_cpu() -> None:
    port = free_port()
    server = start_server(port, CPU_REGISTERS)
    try:
        used, reads, per_poll = bridge_poll_cpu(port)
        base_used, base_polls = baseline_poll_cpu(port)
    finally:
        stop_server(server)
    emit(
        "bridges.modbus_poll_cpu",
        100 * used / CPU_WINDOW,
        "%core",
        100 * base_used / CPU_WINDOW,
        target="<= 2 %core",
        window_s=CPU_WINDOW,
        registers=CPU_REGISTERS,
        poll_interval_s=CPU_POLL_INTERVAL,
        requests_per_poll=per_poll,
        polls_per_s=reads / per_poll / CPU_WINDOW,
        baseline_polls_per_s=base_polls / CPU_WINDOW,
        cpu_us_per_poll=1e6 * used / max(1, reads // per_poll),
        baseline_cpu_us_per_poll=1e6 * base_used / max(1, base_polls),
        desc="process CPU (all threads) of a started dispatcher + ModbusBridge polling 32 holding "
        "registers (one request) at 10 Hz; the Modbus server runs in another process",
        baseline_desc="stdlib socket+struct client reading the same 32 registers at the same pace",
    )


# ============================================================ (3) serial DONE -> COMPLETED


class LineProbe:
    """The baseline of (3): a TCP pair on 127.0.0.1, a reader thread in readline()."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.read_at = 0.0
        with socket.create_server(("127.0.0.1", 0)) as server:
            self._writer = socket.create_connection(server.getsockname())
            self._reader_sock, _ = server.accept()
        for sock in (self._writer, self._reader_sock):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._thread = threading.Thread(target=self._read, name="baseline-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with self._reader_sock.makefile("rb") as lines:
            for _line in iter(lines.readline, b""):
                self.read_at = time.perf_counter()
                self.arrived.set()

    def sample_ms(self, line: bytes) -> float:
        self.arrived.clear()
        time.sleep(SETTLE_SECONDS)
        sent = time.perf_counter()
        self._writer.sendall(line)
        if not self.arrived.wait(WAIT_SECONDS):
            raise RuntimeError("the baseline reader never got the line")
        return (self.read_at - sent) * 1e3

    def close(self) -> None:
        self._writer.close()  # EOF ends the reader's loop
        self._thread.join(5)
        self._reader_sock.close()


def serial_latencies(probe: LineProbe, repeat: int, warmup: int) -> tuple[list[float], list[float]]:
    """(send_done -> OPERATION_COMPLETED at a subscriber, baseline) in ms, taken alternately."""
    completed_at: dict[Any, float] = {}
    completed = threading.Event()

    def on_event(event: DispatchEvent) -> None:
        if event.event_type is EventType.OPERATION_COMPLETED:
            completed_at[event.operation_id] = time.perf_counter()
            completed.set()

    # a signal repeated each second: the bridge is online only while the device talks
    sim = SerialDeviceSimulator(run_seconds=None, ack=False, signals={"alive": 1}, repeat_seconds=1.0)
    url = sim.listen_tcp()
    sim.start()
    dispatcher = OperationDispatcher(RESOURCE)  # no request callback: every start approved
    dispatcher.subscribe(on_event)
    bridge = SerialLineBridge(dispatcher, "dev1", url, executor=True)
    ours: list[float] = []
    base: list[float] = []
    try:
        dispatcher.start()
        bridge.start()
        sim.wait_connected(timeout=WAIT_SECONDS)
        _wait_until(lambda: dispatcher.signals.value("dev1.online") is True, "the bridge online")
        for i in range(warmup + repeat):
            completed.clear()
            op = dispatcher.add_operation(
                Operation(resource_id=RESOURCE, payload={"command": "go"})
            )
            op_id = str(op.id)
            sim.wait_until(
                lambda s, i=i, op_id=op_id: len(s.received) > i
                and s.received[i].operation_id == op_id,
                timeout=WAIT_SECONDS,
            )
            if sim.received[i].kind != "RUN":
                raise RuntimeError(f"expected RUN, the simulator got {sim.received[i]}")
            dispatcher.drain_events(WAIT_SECONDS)
            time.sleep(SETTLE_SECONDS)
            sent = time.perf_counter()
            sim.send_done(op.id)
            if not completed.wait(WAIT_SECONDS):
                raise RuntimeError("OPERATION_COMPLETED never arrived")
            sample = (completed_at[op.id] - sent) * 1e3
            dispatcher.drain_events(WAIT_SECONDS)
            line = f"DONE {op_id}\n".encode()
            base_sample = probe.sample_ms(line)
            if i >= warmup:
                ours.append(sample)
                base.append(base_sample)
        counters = bridge.counters
        if counters["malformed"] or counters["rejected"] or counters["errors"]:
            raise RuntimeError(f"the serial bridge had trouble: {counters}")
    finally:
        bridge.stop(10)
        dispatcher.stop(10)
        sim.stop()
    return ours, base


def bench_serial() -> None:
    probe = LineProbe()
    try:
        ours, base = serial_latencies(probe, REPEAT_SERIAL, WARMUP_SERIAL)
    finally:
        probe.close()
    emit(
        "bridges.serial_done_to_completed",
        statistics.median(ours),
        "ms",
        statistics.median(base),
        target="<= 2 ms",
        repeat=REPEAT_SERIAL,
        p95_ms=percentile(ours, 95),
        max_ms=max(ours),
        baseline_p95_ms=percentile(base, 95),
        desc="SerialDeviceSimulator.send_done (TCP, socket:// URL) -> OPERATION_COMPLETED at a "
        "subscriber via SerialLineBridge, median",
        baseline_desc="stdlib TCP pair on 127.0.0.1: sendall(line) -> reader thread's readline() "
        "returns and sets an Event, median",
    )


# ============================================================ main


def _check_nothing_left() -> None:
    deadline = time.monotonic() + 2.0
    while True:
        threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        if not threads:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"threads left behind: {threads}")
        time.sleep(0.01)
    children = _child_pids()
    if children:
        raise RuntimeError(f"child processes left behind: {children}")


def _child_pids() -> list[int]:
    """The live children of this process, from /proc (empty where /proc is absent)."""
    pids: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children", encoding="ascii") as file:
                pids.extend(int(pid) for pid in file.read().split())
        except OSError:
            continue
    return pids


def main() -> None:
    bench_plc_flip()
    bench_modbus_cpu()
    bench_serial()
    _check_nothing_left()


if __name__ == "__main__":
    main()
