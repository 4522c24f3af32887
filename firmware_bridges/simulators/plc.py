"""A simulated Modbus PLC on pymodbus' own server: a ready bit, a program register and a cycle.

It speaks Modbus TCP (``framer="tcp"``, the default) or Modbus RTU (``framer="rtu"``): RTU
frames with their CRC over a TCP socket on ``host:port`` (a bridge opens
``serial_port="socket://host:port"``), or over a serial line with ``serial_port=``: a device path,
or ``"pty"`` for a pseudo-terminal joined to a second one whose path the bridge opens
(``plc.serial_url``), like a null-modem cable; no hardware and no ``socat`` needed.

The register map (device id 1 by default, every address 0-based)::

    discrete input 0     ready        set by the operator (``set_ready``)
    coil 0               start        a rising edge starts a cycle with the program in HR 0
    coil 1               done         rises ``cycle_time`` seconds after the start
    coil 2               error        rises instead of done for a program in ``failing_programs``
    coil 3               cancel       a rising edge aborts the running cycle (no done, no error)
    coil 4               pause        a rising edge freezes the running cycle's remaining time
    coil 5               resume       a rising edge lets a paused cycle run on
    holding register 0   program      written by the host before the start pulse
    holding register 1   error code   the code of the last failed cycle (0 after a start)
    holding register 2   progress     how far the cycle has got, 0..``progress_scale`` (0 at the
                                      start, frozen while paused, full once done or failed)
    input register 0     cycles       completed cycles (done or error)
    input register 1     temperature  tenths of a degree (``set_temperature``)
    input register 2     mode         0 idle, 1 running, 2 done, 3 error, 4 paused
    input register 3     status word  bit 0 ready, bit 1 busy, bit 2 done, bit 3 error

A start pulse clears done, error and the error code before the write is acknowledged, so a
host that pulses the start coil and then reads done never sees the previous cycle's result.
With ``clear_on_start=False`` it does not: it plays a PLC that clears them a scan late (or only
when the host writes them), which a host must guard against.

Run it standalone::

    python -m firmware_bridges.simulators.plc --port 5020 --cycle-time 0.5 --ready
    python -m firmware_bridges.simulators.plc --port 5021 --framer rtu     # socket://127.0.0.1:5021
    python -m firmware_bridges.simulators.plc --framer rtu --serial-port pty   # prints the pty path

and type operator commands on its stdin (``ready off``, ``fail 7 42``, ``error 5``, ``status``...;
:mod:`firmware_bridges.simulators.plc_console` lists them), or give ``--no-commands``.
SIGTERM stops it as Ctrl-C does.

or from a test::

    with PlcSimulator(cycle_time=0.05) as plc:   # a free port on 127.0.0.1
        plc.set_ready(True)
        ... ModbusBridge(dispatcher, "plc1", "127.0.0.1", plc.port, ...) ...

    with PlcSimulator(framer="rtu", serial_port="pty") as plc:
        ... ModbusBridge(dispatcher, "plc1", transport="rtu", serial_port=plc.serial_url, ...) ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
import tty
import weakref
from collections.abc import Mapping
from typing import Any

try:
    from pymodbus.framer import FramerType
    from pymodbus.server import ModbusSerialServer, ModbusTcpServer
    from pymodbus.simulator import SimData, SimDevice
    from pymodbus.simulator.simutils import DataType
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "PlcSimulator needs pymodbus: pip install 'operation-dispatcher[modbus]'"
    ) from exc

__all__ = ["PlcSimulator", "PtyLink", "main"]

logger = logging.getLogger(__name__)

# function codes of the requests the simulator answers
_READ_COILS, _READ_DISCRETE, _READ_HOLDING, _READ_INPUT = 1, 2, 3, 4
_WRITE_COIL, _WRITE_REGISTER, _WRITE_COILS, _WRITE_REGISTERS = 5, 6, 15, 16
_BITS = 16  # coils and discrete inputs of the map, packed 16 to a register
_REGISTERS = 8

MODE_IDLE, MODE_RUNNING, MODE_DONE, MODE_ERROR, MODE_PAUSED = 0, 1, 2, 3, 4
FRAMERS = {"tcp": FramerType.SOCKET, "rtu": FramerType.RTU}
PTY = "pty"  # serial_port=PTY: serve on a pseudo-terminal pair made here


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class PtyLink:
    """Two pseudo-terminals joined back to back by a thread, as ``socat pty pty`` would.

    pymodbus' serial server and pyserial both open a device *path*, and a pty has only one (its
    slave end; the master is a bare file descriptor), so the link makes two ptys and copies bytes
    between their masters: the server opens ``server_path``, the bridge ``client_path``, and
    they talk as over a null-modem cable. While the link is stopped nothing passes (a dead line);
    :meth:`start` discards what queued up meanwhile. The slave ends stay open here so a master
    never reads EIO while nobody has its path open. :meth:`close` releases the ptys.
    """

    def __init__(self) -> None:
        self._masters: list[int] = []
        self._fds: list[int] = []
        paths = []
        for _ in range(2):
            master, slave = os.openpty()
            self._fds += [master, slave]
            tty.setraw(slave)  # bytes pass unchanged (pyserial sets raw mode too when it opens)
            os.set_blocking(master, False)
            self._masters.append(master)
            paths.append(os.ttyname(slave))
        self.server_path, self.client_path = paths
        self._wake_read, self._wake_write = os.pipe()
        self._fds += [self._wake_read, self._wake_write]
        os.set_blocking(self._wake_read, False)
        self._thread: threading.Thread | None = None
        self._close_fds = weakref.finalize(self, _close_all, list(self._fds))

    @property
    def closed(self) -> bool:
        return not self._close_fds.alive

    def start(self) -> None:
        """Start copying (a no-op while running)."""
        if self.closed:
            raise RuntimeError("the pty link is closed")
        if self._thread is not None:
            return
        for fd in (*self._masters, self._wake_read):
            _drain(fd)
        self._thread = threading.Thread(
            target=self._run, name=f"plc-simulator-pty[{self.client_path}]", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop copying; the ptys stay (their paths too), so :meth:`start` can resume."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        os.write(self._wake_write, b"x")
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"thread {thread.name!r} did not stop within {timeout} s")

    def close(self) -> None:
        """Stop and release both ptys; safe to call twice."""
        self.stop()
        self._close_fds()

    def _run(self) -> None:
        first, second = self._masters
        peer = {first: second, second: first}
        while True:
            ready, _, _ = select.select([first, second, self._wake_read], [], [])
            if self._wake_read in ready:
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                    os.write(peer[fd], data)
                except (BlockingIOError, InterruptedError):
                    pass  # nothing after all, or nobody drains the other end: lost, as on a wire


def _drain(fd: int) -> None:
    """Read and discard what a non-blocking fd holds."""
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while os.read(fd, 4096):
            pass


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class PlcSimulator:
    """A PLC with one machine cycle, served over Modbus TCP or RTU on its own thread.

    :param host: the address to listen on.
    :param port: the TCP port; 0 picks a free one (kept across :meth:`stop` / :meth:`start`,
        so a test can restart the PLC on the same port).
    :param cycle_time: seconds from the start pulse to done (or error).
    :param device_id: the Modbus device id (unit) the PLC answers as.
    :param failing_programs: program number -> error code; these cycles end with the error bit.
    :param ready: the initial state of the ready bit.
    :param framer: ``"tcp"`` (Modbus TCP) or ``"rtu"`` (RTU frames with CRC).
    :param serial_port: serve RTU on a serial line instead of ``host:port``: a device path at
        19200 8N1, or ``"pty"`` for a :class:`PtyLink` whose other end is :attr:`serial_url`
        (kept across :meth:`stop` / :meth:`start`; :meth:`close` releases it).
    :param clear_on_start: False plays a PLC whose start pulse leaves the previous cycle's done,
        error and error code set.
    :param progress_scale: the progress register's value for a finished cycle (100: percent,
        10000: hundredths of a percent).
    """

    READY_INPUT = 0
    START_COIL, DONE_COIL, ERROR_COIL, CANCEL_COIL, PAUSE_COIL, RESUME_COIL = 0, 1, 2, 3, 4, 5
    PROGRAM_REGISTER, ERROR_CODE_REGISTER, PROGRESS_REGISTER = 0, 1, 2
    CYCLES_REGISTER, TEMPERATURE_REGISTER, MODE_REGISTER, STATUS_REGISTER = 0, 1, 2, 3

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        cycle_time: float = 0.5,
        device_id: int = 1,
        failing_programs: Mapping[int, int] | None = None,
        ready: bool = False,
        framer: str = "tcp",
        serial_port: str | None = None,
        clear_on_start: bool = True,
        progress_scale: int = 100,
    ) -> None:
        if type(progress_scale) is not int or not 1 <= progress_scale <= 0xFFFF:
            raise ValueError(f"progress_scale must be an integer 1..65535, got {progress_scale!r}")
        if not cycle_time >= 0:
            raise ValueError(f"cycle_time must be >= 0 seconds, got {cycle_time!r}")
        if framer not in FRAMERS:
            raise ValueError(f"framer must be 'tcp' or 'rtu', got {framer!r}")
        if serial_port is not None and framer != "rtu":
            raise ValueError("a serial line carries RTU frames: use framer='rtu' with serial_port")
        self.host = host
        self.port = port or free_port(host)
        self.framer = framer
        self.serial_port = serial_port
        self.clear_on_start = bool(clear_on_start)
        self._pty = PtyLink() if serial_port == PTY else None
        self.cycle_time = float(cycle_time)
        self.device_id = device_id
        self.failing_programs = dict(failing_programs or {})
        self.progress_scale = progress_scale
        self._progress_override: int | None = None
        self._lock = threading.Lock()
        # the PLC's state; the Modbus registers only mirror it (see _action)
        self._ready = bool(ready)
        self._start = False
        self._commands = {self.CANCEL_COIL: False, self.PAUSE_COIL: False, self.RESUME_COIL: False}
        self._paused_left: float | None = None  # the remaining time of a paused cycle
        self.cancelled = 0  # cycles aborted by the cancel coil
        self._done = False
        self._error = False
        self._program = 0
        self._error_code = 0
        self._cycles = 0
        self._temperature = 215
        self._busy_until: float | None = None
        self._running_program = 0
        self.programs_run: list[int] = []
        # the server thread
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | ModbusSerialServer | None = None

    # ================================================================ operator side
    def set_ready(self, ready: bool) -> None:
        with self._lock:
            self._ready = bool(ready)

    def set_progress(self, raw: int | None) -> None:
        """Show ``raw`` in the progress register (any 0..65535, also beyond the scale, as a
        faulty PLC program would); None goes back to the cycle's own progress."""
        with self._lock:
            self._progress_override = None if raw is None else int(raw) & 0xFFFF

    def _progress(self, now: float) -> int:
        """The progress register (lock held): the share of the cycle time gone, scaled."""
        if self._progress_override is not None:
            return self._progress_override
        if self._busy_until is not None:
            left = self._busy_until - now
        elif self._paused_left is not None:
            left = self._paused_left
        else:
            return self.progress_scale if self._done or self._error else 0
        share = 1.0 - left / self.cycle_time if self.cycle_time > 0 else 1.0
        return int(self.progress_scale * min(1.0, max(0.0, share)))

    @property
    def ready(self) -> bool:
        with self._lock:
            return self._ready

    @property
    def failing(self) -> dict[int, int]:
        """A copy of ``failing_programs``: program -> error code."""
        with self._lock:
            return dict(self.failing_programs)

    def fail_program(self, program: int, code: int | None) -> None:
        """From the next cycle on, ``program`` ends with the error bit and ``code``; None: with done."""
        with self._lock:
            if code is None:
                self.failing_programs.pop(program, None)
            else:
                self.failing_programs[program] = code

    def fail_cycle(self, code: int) -> bool:
        """End the running (or paused) cycle now with the error bit and ``code``, as a PLC whose
        machine faulted; False when no cycle runs."""
        with self._lock:
            self._advance(time.monotonic())
            if self._busy_until is None and self._paused_left is None:
                return False
            self._busy_until = self._paused_left = None
            self._cycles += 1
            self._error = True
            self._error_code = int(code) & 0xFFFF
            return True

    @property
    def mode(self) -> int:
        """``MODE_IDLE`` .. ``MODE_PAUSED``, as input register 2 shows it."""
        with self._lock:
            self._advance(time.monotonic())
            return self._mode()

    def set_temperature(self, tenths_of_degree: int) -> None:
        with self._lock:
            self._temperature = int(tenths_of_degree) & 0xFFFF

    @property
    def busy(self) -> bool:
        with self._lock:
            self._advance(time.monotonic())
            return self._busy_until is not None or self._paused_left is not None

    @property
    def cycles(self) -> int:
        with self._lock:
            self._advance(time.monotonic())
            return self._cycles

    # ================================================================ lifecycle
    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def where(self) -> str:
        """What the PLC is served on: ``host:port`` or the serial device's path."""
        if self._pty is not None:
            return self._pty.server_path
        return self.serial_port or f"{self.host}:{self.port}"

    @property
    def serial_url(self) -> str | None:
        """What a ``ModbusBridge(transport="rtu")`` opens as ``serial_port`` to reach this PLC.

        ``socket://host:port`` for RTU over TCP, the other pty's path for ``serial_port="pty"``;
        None for Modbus TCP (the bridge takes host and port) and for a device path (the other
        end of that line is not known here).
        """
        if self.framer != "rtu":
            return None
        if self._pty is not None:
            return self._pty.client_path
        return f"socket://{self.host}:{self.port}" if self.serial_port is None else None

    def _new_server(self) -> ModbusTcpServer | ModbusSerialServer:
        if self.serial_port is None:
            return ModbusTcpServer(self._device(), framer=FRAMERS[self.framer],
                                   address=(self.host, self.port))
        return ModbusSerialServer(self._device(), framer=FramerType.RTU, port=self.where)

    def start(self, timeout: float = 5.0) -> None:
        """Serve on a thread; returns once the port accepts connections (or the line is open)."""
        if self.is_running:
            raise RuntimeError(f"the PLC simulator on {self.where} is already running")
        if self._pty is not None:
            self._pty.start()
        listening = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def serve() -> None:
            self._server = self._new_server()
            await self._server.serve_forever(background=True)
            listening.set()
            await self._server.serving

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(serve())
            except BaseException as exc:  # reported to start()
                failure.append(exc)
            finally:
                listening.set()
                _close_loop(loop)

        self._thread = threading.Thread(target=run, name=f"plc-simulator[{self.where}]", daemon=True)
        self._thread.start()
        if not listening.wait(timeout):
            raise RuntimeError(f"the PLC simulator did not listen on {self.where} in {timeout} s")
        if failure:
            self._thread.join(timeout)
            self._thread = None
            if self._pty is not None:
                self._pty.stop()
            raise RuntimeError(f"the PLC simulator could not listen on {self.where}") from failure[0]
        logger.info("PLC simulator (Modbus %s) listening on %s", self.framer.upper(), self.where)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the port and every connection, and end the threads; safe to call twice."""
        if self._pty is not None:
            self._pty.stop(timeout)  # the line goes dead first: no request reaches a closing server
        thread, loop, server = self._thread, self._loop, self._server
        if thread is None or loop is None:
            return
        if server is not None and thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(server.shutdown(), loop).result(timeout)
            except RuntimeError:  # the loop has already ended
                pass
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"thread {thread.name!r} did not stop within {timeout} s")
        self._thread = self._loop = self._server = None

    def close(self, timeout: float = 5.0) -> None:
        """Stop, and release the pseudo-terminals of ``serial_port="pty"``; safe to call twice."""
        self.stop(timeout)
        if self._pty is not None:
            self._pty.close()

    def __enter__(self) -> PlcSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ================================================================ the PLC logic
    def _device(self) -> SimDevice:
        bits = [SimData(0, count=_BITS, values=False, datatype=DataType.BITS)]
        regs = [SimData(0, count=_REGISTERS, values=0, datatype=DataType.REGISTERS)]
        return SimDevice(
            self.device_id,
            simdata=(list(bits), [SimData(0, count=_BITS, values=False, datatype=DataType.BITS)],
                     list(regs), [SimData(0, count=_REGISTERS, values=0, datatype=DataType.REGISTERS)]),
            use_bit_addressing=True,
            action=self._action,
        )

    def _advance(self, now: float) -> None:
        """End the running cycle if its time is up (lock held)."""
        if self._busy_until is not None and now >= self._busy_until:
            self._busy_until = None
            self._cycles += 1
            code = self.failing_programs.get(self._running_program)
            if code is None:
                self._done = True
            else:
                self._error = True
                self._error_code = int(code) & 0xFFFF

    def _write(self, func_code: int, address: int, values: list[Any]) -> None:
        """Apply a host write to the state (lock held)."""
        for offset, value in enumerate(values):
            addr = address + offset
            if func_code in (_WRITE_COIL, _WRITE_COILS):
                value = bool(value)
                if addr in self._commands:
                    if value and not self._commands[addr]:  # a rising edge
                        self._command(addr, time.monotonic())
                    self._commands[addr] = value
                elif addr == self.START_COIL:
                    if value and not self._start and self._busy_until is None and self._paused_left is None:
                        if self.clear_on_start:
                            self._done = self._error = False
                            self._error_code = 0
                        self._running_program = self._program
                        self.programs_run.append(self._program)
                        self._busy_until = time.monotonic() + self.cycle_time
                    self._start = value
                elif addr == self.DONE_COIL:
                    self._done = value
                elif addr == self.ERROR_COIL:
                    self._error = value
            elif addr == self.PROGRAM_REGISTER:
                self._program = int(value)
            elif addr == self.ERROR_CODE_REGISTER:
                self._error_code = int(value)

    def _command(self, coil: int, now: float) -> None:
        """Cancel, pause or resume the running cycle (lock held)."""
        if coil == self.CANCEL_COIL and (self._busy_until is not None or self._paused_left is not None):
            self._busy_until = self._paused_left = None
            self.cancelled += 1
        elif coil == self.PAUSE_COIL and self._busy_until is not None:
            self._paused_left, self._busy_until = max(0.0, self._busy_until - now), None
        elif coil == self.RESUME_COIL and self._paused_left is not None:
            self._busy_until, self._paused_left = now + self._paused_left, None

    def _mode(self) -> int:
        """Input register 2 (lock held)."""
        if self._paused_left is not None:
            return MODE_PAUSED
        if self._busy_until is not None:
            return MODE_RUNNING
        return MODE_ERROR if self._error else MODE_DONE if self._done else MODE_IDLE

    def _mirror(self, func_code: int, registers: list[int]) -> None:
        """Copy the state into the block a read is about to see (lock held)."""
        paused = self._paused_left is not None
        busy = self._busy_until is not None or paused
        if func_code in (_READ_COILS, _WRITE_COIL, _WRITE_COILS):
            commands = [self._commands[c] for c in (self.CANCEL_COIL, self.PAUSE_COIL, self.RESUME_COIL)]
            registers[0] = _pack([self._start, self._done, self._error, *commands])
        elif func_code == _READ_DISCRETE:
            registers[0] = _pack([self._ready])
        elif func_code in (_READ_HOLDING, _WRITE_REGISTER, _WRITE_REGISTERS):
            registers[self.PROGRAM_REGISTER] = self._program
            registers[self.ERROR_CODE_REGISTER] = self._error_code
            registers[self.PROGRESS_REGISTER] = self._progress(time.monotonic())
        elif func_code == _READ_INPUT:
            registers[self.CYCLES_REGISTER] = self._cycles & 0xFFFF
            registers[self.TEMPERATURE_REGISTER] = self._temperature
            registers[self.MODE_REGISTER] = self._mode()
            registers[self.STATUS_REGISTER] = _pack([self._ready, busy, self._done, self._error])

    async def _action(
        self,
        func_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[Any] | None,
    ) -> None:
        """pymodbus calls this before every read or write of a block (on the server thread)."""
        with self._lock:
            self._advance(time.monotonic())
            if values is not None:
                self._write(func_code, address, values)
            self._mirror(func_code, registers)
        return None


def _pack(bits: list[bool]) -> int:
    """Bits to a register, bit 0 first (the order pymodbus uses for coils)."""
    return sum(1 << i for i, bit in enumerate(bits) if bit)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m firmware_bridges.simulators.plc``: serve a simulated PLC, taking operator
    commands on stdin, until ``quit``, Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m firmware_bridges.simulators.plc",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5020)
    parser.add_argument("--framer", choices=sorted(FRAMERS), default="tcp",
                        help="tcp: Modbus TCP (default); rtu: RTU frames with CRC (over TCP, "
                             "for serial_port='socket://host:port', unless --serial-port)")
    parser.add_argument("--serial-port", metavar="PATH|pty",
                        help="serve RTU on this serial device (19200 8N1), or on a pseudo-terminal "
                             "pair with 'pty' (the path to open is printed); needs --framer rtu")
    parser.add_argument("--no-clear-on-start", dest="clear_on_start", action="store_false",
                        help="keep the previous cycle's done/error bits set after a start pulse")
    parser.add_argument("--cycle-time", type=float, default=0.5, help="seconds (default 0.5)")
    parser.add_argument("--progress-scale", type=int, default=100,
                        help="holding register 2 at the end of a cycle (default 100: percent)")
    parser.add_argument("--device-id", type=int, default=1)
    parser.add_argument("--ready", action="store_true", help="start with the ready bit set")
    parser.add_argument("--fail", action="append", default=[], metavar="PROGRAM=CODE",
                        help="make a program end with the error bit and this code (repeatable)")
    parser.add_argument("--no-commands", dest="commands", action="store_false",
                        help="do not read operator commands from stdin (ready on|off, fail "
                             "PROGRAM CODE, pass PROGRAM, error [CODE], temperature, status, quit)")
    args = parser.parse_args(argv)
    if args.serial_port is not None and args.framer != "rtu":
        parser.error("--serial-port needs --framer rtu (a serial line carries RTU frames)")
    failing = {}
    for item in args.fail:
        program, sep, code = item.partition("=")
        if not sep or not program.strip().isdigit() or not code.strip().isdigit():
            parser.error(f"--fail expects PROGRAM=CODE with two numbers, got {item!r}")
        failing[int(program)] = int(code)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from .plc_console import COMMANDS, PlcConsole  # it imports this module

    _stop_on_sigterm()
    plc = PlcSimulator(args.host, args.port, cycle_time=args.cycle_time,
                       device_id=args.device_id, failing_programs=failing, ready=args.ready,
                       framer=args.framer, serial_port=args.serial_port,
                       clear_on_start=args.clear_on_start, progress_scale=args.progress_scale)
    try:
        plc.start()
        if plc.serial_url is not None:
            hint = f"a bridge opens transport='rtu', serial_port={plc.serial_url!r}"
        elif plc.serial_port is not None:
            hint = "a bridge opens the other end of this line with transport='rtu'"
        else:
            hint = f"a bridge connects to host={args.host!r}, port={plc.port}"
        print(f"PLC simulator (Modbus {args.framer.upper()}) on {plc.where}, device id "
              f"{args.device_id}: {hint}; Ctrl-C stops it", flush=True)
        if args.commands:
            print("commands on stdin, one per line (each answered 'ok: ...' or 'error: ...'): "
                  + "; ".join(COMMANDS), flush=True)
            if PlcConsole(plc, sys.stdout).run(sys.stdin.buffer):
                return 0  # quit
        threading.Event().wait()  # stdin ended (or --no-commands): serve until a signal
    except KeyboardInterrupt:
        pass
    finally:
        plc.close()
    return 0


def _stop_on_sigterm() -> None:
    """SIGTERM ends the simulator as Ctrl-C does: ports and pseudo-terminals closed first."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


if __name__ == "__main__":
    raise SystemExit(main())
