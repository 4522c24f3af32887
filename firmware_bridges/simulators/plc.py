"""A simulated Modbus PLC on pymodbus' own TCP server: a ready bit, a program register and a cycle.

The register map (device id 1 by default, every address 0-based)::

    discrete input 0     ready        set by the operator (``set_ready``)
    coil 0               start        a rising edge starts a cycle with the program in HR 0
    coil 1               done         rises ``cycle_time`` seconds after the start
    coil 2               error        rises instead of done for a program in ``failing_programs``
    holding register 0   program      written by the host before the start pulse
    holding register 1   error code   the code of the last failed cycle (0 after a start)
    input register 0     cycles       completed cycles (done or error)
    input register 1     temperature  tenths of a degree (``set_temperature``)
    input register 2     mode         0 idle, 1 running, 2 done, 3 error
    input register 3     status word  bit 0 ready, bit 1 busy, bit 2 done, bit 3 error

A start pulse clears done, error and the error code before the write is acknowledged, so a
host that pulses the start coil and then reads done never sees the previous cycle's result.

Run it standalone::

    python -m firmware_bridges.simulators.plc --port 5020 --cycle-time 0.5 --ready

or from a test::

    with PlcSimulator(cycle_time=0.05) as plc:   # a free port on 127.0.0.1
        plc.set_ready(True)
        ... ModbusBridge(dispatcher, "plc1", "127.0.0.1", plc.port, ...) ...
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

try:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import SimData, SimDevice
    from pymodbus.simulator.simutils import DataType
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "PlcSimulator needs pymodbus: pip install 'operation-dispatcher[modbus]'"
    ) from exc

__all__ = ["PlcSimulator", "main"]

logger = logging.getLogger(__name__)

# function codes of the requests the simulator answers
_READ_COILS, _READ_DISCRETE, _READ_HOLDING, _READ_INPUT = 1, 2, 3, 4
_WRITE_COIL, _WRITE_REGISTER, _WRITE_COILS, _WRITE_REGISTERS = 5, 6, 15, 16
_BITS = 16  # coils and discrete inputs of the map, packed 16 to a register
_REGISTERS = 8

MODE_IDLE, MODE_RUNNING, MODE_DONE, MODE_ERROR = 0, 1, 2, 3


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class PlcSimulator:
    """A PLC with one machine cycle, served over Modbus TCP on its own thread.

    :param host: the address to listen on.
    :param port: the TCP port; 0 picks a free one (kept across :meth:`stop` / :meth:`start`,
        so a test can restart the PLC on the same port).
    :param cycle_time: seconds from the start pulse to done (or error).
    :param device_id: the Modbus device id (unit) the PLC answers as.
    :param failing_programs: program number -> error code; these cycles end with the error bit.
    :param ready: the initial state of the ready bit.
    """

    READY_INPUT = 0
    START_COIL, DONE_COIL, ERROR_COIL = 0, 1, 2
    PROGRAM_REGISTER, ERROR_CODE_REGISTER = 0, 1
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
    ) -> None:
        if not cycle_time >= 0:
            raise ValueError(f"cycle_time must be >= 0 seconds, got {cycle_time!r}")
        self.host = host
        self.port = port or free_port(host)
        self.cycle_time = float(cycle_time)
        self.device_id = device_id
        self.failing_programs = dict(failing_programs or {})
        self._lock = threading.Lock()
        # the PLC's state; the Modbus registers only mirror it (see _action)
        self._ready = bool(ready)
        self._start = False
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
        self._server: ModbusTcpServer | None = None

    # ================================================================ operator side
    def set_ready(self, ready: bool) -> None:
        with self._lock:
            self._ready = bool(ready)

    def set_temperature(self, tenths_of_degree: int) -> None:
        with self._lock:
            self._temperature = int(tenths_of_degree) & 0xFFFF

    @property
    def busy(self) -> bool:
        with self._lock:
            self._advance(time.monotonic())
            return self._busy_until is not None

    @property
    def cycles(self) -> int:
        with self._lock:
            self._advance(time.monotonic())
            return self._cycles

    # ================================================================ lifecycle
    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 5.0) -> None:
        """Listen on ``host:port`` on a thread; returns once the port accepts connections."""
        if self.is_running:
            raise RuntimeError(f"the PLC simulator on port {self.port} is already running")
        listening = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def serve() -> None:
            self._server = ModbusTcpServer(self._device(), address=(self.host, self.port))
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

        self._thread = threading.Thread(
            target=run, name=f"plc-simulator[{self.host}:{self.port}]", daemon=True
        )
        self._thread.start()
        if not listening.wait(timeout):
            raise RuntimeError(f"the PLC simulator did not listen on port {self.port} in {timeout} s")
        if failure:
            self._thread.join(timeout)
            self._thread = None
            raise RuntimeError(f"the PLC simulator could not listen on {self.host}:{self.port}") \
                from failure[0]
        logger.info("PLC simulator listening on %s:%s", self.host, self.port)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the port and every connection, and end the thread; safe to call twice."""
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

    def __enter__(self) -> PlcSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
                if addr == self.START_COIL:
                    if value and not self._start and self._busy_until is None:
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

    def _mirror(self, func_code: int, registers: list[int]) -> None:
        """Copy the state into the block a read is about to see (lock held)."""
        busy = self._busy_until is not None
        if func_code in (_READ_COILS, _WRITE_COIL, _WRITE_COILS):
            registers[0] = _pack([self._start, self._done, self._error])
        elif func_code == _READ_DISCRETE:
            registers[0] = _pack([self._ready])
        elif func_code in (_READ_HOLDING, _WRITE_REGISTER, _WRITE_REGISTERS):
            registers[self.PROGRAM_REGISTER] = self._program
            registers[self.ERROR_CODE_REGISTER] = self._error_code
        elif func_code == _READ_INPUT:
            mode = (MODE_RUNNING if busy else MODE_ERROR if self._error
                    else MODE_DONE if self._done else MODE_IDLE)
            registers[self.CYCLES_REGISTER] = self._cycles & 0xFFFF
            registers[self.TEMPERATURE_REGISTER] = self._temperature
            registers[self.MODE_REGISTER] = mode
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
    """``python -m firmware_bridges.simulators.plc``: serve a simulated PLC until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m firmware_bridges.simulators.plc",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5020)
    parser.add_argument("--cycle-time", type=float, default=0.5, help="seconds (default 0.5)")
    parser.add_argument("--device-id", type=int, default=1)
    parser.add_argument("--ready", action="store_true", help="start with the ready bit set")
    parser.add_argument("--fail", action="append", default=[], metavar="PROGRAM=CODE",
                        help="make a program end with the error bit and this code (repeatable)")
    args = parser.parse_args(argv)
    failing = {}
    for item in args.fail:
        program, sep, code = item.partition("=")
        if not sep or not program.strip().isdigit() or not code.strip().isdigit():
            parser.error(f"--fail expects PROGRAM=CODE with two numbers, got {item!r}")
        failing[int(program)] = int(code)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    plc = PlcSimulator(args.host, args.port, cycle_time=args.cycle_time,
                       device_id=args.device_id, failing_programs=failing, ready=args.ready)
    plc.start()
    print(f"PLC simulator on {args.host}:{plc.port} (device id {args.device_id}); Ctrl-C stops it",
          flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        plc.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
