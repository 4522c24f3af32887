"""MicroPython firmware speaking the operation-dispatcher serial line protocol.

Copy to a board as ``main.py`` (e.g. ``mpremote cp main.py :main.py``); written for a Raspberry
Pi Pico or an ESP32 but not run on one by the project. The test suite runs this file unchanged
on CPython behind a real pseudo-terminal (``tests/micropython_board.py`` stands in only for
``machine.Pin`` and ``time.ticks_*``) and drives it through ``SerialLineBridge``. It talks over
the USB serial console (``sys.stdin``/``sys.stdout``), so on the host::

    SerialLineBridge(dispatcher, "dev1", "/dev/ttyACM0", executor=True)

Device to host: ``SIG ready=<true|false>`` every second (from the READY_PIN input) and on
every change, ``DONE <id>`` / ``ERR <id> <reason>`` when a job ends, ``ACK`` / ``NAK``.

READY_PIN is active-low: the input has the internal pull-up on, so it reads high (``ready=false``)
while nothing is connected, and ``ready=true`` only while the pin is pulled to GND (a switch or
relay contact between the pin and GND, or an open-collector / open-drain "ready" output). A
broken wire thus reads as not ready. For a sensor that drives the pin high when ready, change
``now_ready = ready.value() == 0`` to ``== 1`` and drop ``Pin.PULL_UP``.
Host to device: ``RUN <id> <command>``, ``PAUSE``, ``RESUME``, ``CANCEL <id>``. Here a
command is a number of seconds to drive OUTPUT_PIN ("3" runs for 3 s; anything else -> ERR).
Set CHECKSUM = True to match ``SerialLineBridge(..., checksum=True)``.
"""

import sys
import time

try:
    import select

    from machine import Pin
except ImportError:  # pragma: no cover - only for reading this file off-board
    Pin = None

READY_PIN = 14  # active-low: ready while pulled to GND (internal pull-up; see above)
OUTPUT_PIN = 25
CHECKSUM = False
TERMINATOR = "\n"
REPORT_MS = 1000


def checksum(body):
    value = 0
    for byte in body.encode():
        value ^= byte
    return f"{value:02X}"


def send(body):
    if CHECKSUM:
        body = body + "*" + checksum(body)
    sys.stdout.write(body + TERMINATOR)


def strip(line):
    line = line.strip()
    if not CHECKSUM:
        return line
    body, _, given = line.rpartition("*")
    if len(given) != 2 or given.upper() != checksum(body):
        return None
    return body


class Job:
    def __init__(self, op_id, seconds):
        self.op_id = op_id
        self.left_ms = int(seconds * 1000)
        self.started = time.ticks_ms()
        self.paused = False

    def elapsed_ms(self):
        return time.ticks_diff(time.ticks_ms(), self.started)


def main():
    ready = Pin(READY_PIN, Pin.IN, Pin.PULL_UP)
    out = Pin(OUTPUT_PIN, Pin.OUT, value=0)
    poll = select.poll()
    poll.register(sys.stdin, select.POLLIN)
    job = None
    buffer = ""
    last_ready = None
    last_report = time.ticks_ms()

    while True:
        # 1. inputs -> signals, on change and every REPORT_MS (the host's max age)
        now_ready = ready.value() == 0  # active-low
        if now_ready != last_ready or time.ticks_diff(time.ticks_ms(), last_report) >= REPORT_MS:
            send("SIG ready=" + ("true" if now_ready else "false"))
            last_ready, last_report = now_ready, time.ticks_ms()

        # 2. the running job
        if job is not None and not job.paused and job.elapsed_ms() >= job.left_ms:
            out.value(0)
            send("DONE " + job.op_id)
            job = None

        # 3. commands from the host (never block longer than 10 ms)
        if not poll.poll(10):
            continue
        buffer += sys.stdin.read(1)
        if not buffer.endswith(TERMINATOR):
            if len(buffer) > 256:
                buffer = ""  # over-long: drop it
            continue
        line, buffer = strip(buffer), ""
        parts = line.split(" ", 2) if line else []
        kind = parts[0] if parts else ""
        if kind == "RUN" and len(parts) >= 2 and job is None:
            command = parts[2] if len(parts) > 2 else ""
            try:
                seconds = float(command)
            except ValueError:
                send("ERR " + parts[1] + " unknown command " + command)
                continue
            job = Job(parts[1], seconds)
            out.value(1)
            send("ACK")
        elif kind == "PAUSE" and job is not None and not job.paused:
            job.left_ms -= job.elapsed_ms()
            job.paused = True
            out.value(0)
            send("ACK")
        elif kind == "RESUME" and job is not None and job.paused:
            job.started, job.paused = time.ticks_ms(), False
            out.value(1)
            send("ACK")
        elif kind == "CANCEL" and job is not None and len(parts) == 2 and parts[1] == job.op_id:
            out.value(0)
            job = None
            send("ACK")
        else:
            send("NAK")


if __name__ == "__main__" and Pin is not None:
    main()
