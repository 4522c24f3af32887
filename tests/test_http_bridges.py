"""``GET /bridges`` and ``GET /bridges/<name>`` through Flask's test client, with real bridges
talking to real peers on 127.0.0.1 (the pymodbus PLC simulator, the serial device simulator on
a TCP port), each answer checked against the app's own ``/openapi.json``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from conftest import EventRecorder, assert_error, wait_signal, wait_until

from firmware_bridges.base import BaseBridge
from firmware_bridges.modbus import ModbusBridge
from firmware_bridges.serial_line import SerialLineBridge
from firmware_bridges.simulators.plc import PlcSimulator
from firmware_bridges.simulators.serial_device import SerialDeviceSimulator
from operation_dispatcher import EventType, ExecutionOutcome, Operation, OperationDispatcher
from operation_dispatcher.config import ConfigError, parse_config
from operation_dispatcher.http import create_app

HOST = "127.0.0.1"
STATUS_KEYS = {"name", "kind", "endpoint", "running", "online", "last_error", "counters"}
COUNTERS = {"reads", "errors", "reconnects", "malformed"}


class Conformance:
    """Validates live answers against the OpenAPI document the app itself publishes."""

    def __init__(self, api: Any) -> None:
        response = api.get("/openapi.json")
        assert response.status_code == 200, response.text
        self.spec = response.json()
        self.schema = schemathesis.openapi.from_dict(self.spec)

    def check(self, path: str, response: Any) -> Any:
        """Validate ``response`` of ``GET path`` (a templated path); return its JSON."""
        self.schema[path]["GET"].validate_response(getattr(response, "wsgi", response))
        return response.json()


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def plc() -> Iterator[PlcSimulator]:
    simulator = PlcSimulator(HOST, cycle_time=0.05, ready=True)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def device() -> Iterator[SerialDeviceSimulator]:
    simulator = SerialDeviceSimulator(run_seconds=None, signals={"ready": True}, repeat_seconds=0.05)
    simulator.listen_tcp(HOST)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def bridges(make_dispatcher: Callable[..., OperationDispatcher]) -> Iterator[list[BaseBridge]]:
    """Bridges a test appends here are stopped at teardown (before their dispatcher)."""
    made: list[BaseBridge] = []
    yield made
    for bridge in made:
        bridge.stop()


def modbus_bridge(dispatcher: OperationDispatcher, port: int, name: str = "plc") -> ModbusBridge:
    return ModbusBridge(
        dispatcher, name, HOST, port, poll_interval=0.01, timeout=0.5,
        reconnect_initial=0.02, reconnect_max=0.1,
        signals={"ready": {"kind": "discrete_input", "address": PlcSimulator.READY_INPUT}},
    )


def serial_bridge(dispatcher: OperationDispatcher, url: str, name: str = "mcu") -> SerialLineBridge:
    return SerialLineBridge(dispatcher, name, url, reconnect_initial=0.02, reconnect_max=0.1)


# ------------------------------------------------------------------------------ no bridges


def test_without_bridges_the_list_is_empty_and_any_name_is_404(make_client: Callable[..., Any]) -> None:
    api = make_client(start=False)
    conformance = Conformance(api)
    response = api.get("/bridges")
    assert response.status_code == 200, response.text
    assert conformance.check("/bridges", response) == []
    response = api.get("/bridges/plc")
    body = assert_error(response, 404, "bridge_not_found", known=[])
    assert "'plc'" in body["message"]
    conformance.check("/bridges/{name}", response)


def test_a_name_too_long_is_refused_with_400(make_client: Callable[..., Any]) -> None:
    api = make_client(start=False)
    response = api.get("/bridges/" + "p" * 201)
    assert_error(response, 400, "invalid_bridge_name")
    Conformance(api).check("/bridges/{name}", response)


# ------------------------------------------------------------------------------ live bridges


def test_bridges_report_health_and_counters_and_the_plc_going_away(
    make_client: Callable[..., Any],
    make_dispatcher: Callable[..., OperationDispatcher],
    plc: PlcSimulator,
    device: SerialDeviceSimulator,
    bridges: list[BaseBridge],
) -> None:
    dispatcher = make_dispatcher()
    modbus = modbus_bridge(dispatcher, plc.port)
    serial = serial_bridge(dispatcher, device.url)
    bridges.extend([modbus, serial])
    api = make_client(dispatcher, bridges=bridges)
    conformance = Conformance(api)

    # built, not started: listed in the order given, neither running nor online
    before = conformance.check("/bridges", api.get("/bridges"))
    assert [(b["name"], b["kind"], b["running"], b["online"]) for b in before] == [
        ("plc", "modbus", False, False), ("mcu", "serial", False, False),
    ]

    for bridge in bridges:
        bridge.start()

    def both_up() -> list[dict[str, Any]] | None:
        listed = api.get("/bridges").json()
        by_name = {b["name"]: b for b in listed}
        up = all(b["online"] for b in listed) and all(
            by_name[n]["counters"]["reads"] > 0 for n in ("plc", "mcu")
        )
        return listed if up else None

    wait_until(both_up, what="both bridges online with reads")
    response = api.get("/bridges")
    assert response.status_code == 200
    listed = conformance.check("/bridges", response)
    plc_status, mcu_status = listed
    assert set(plc_status) == set(mcu_status) == STATUS_KEYS
    assert plc_status["name"] == "plc" and plc_status["kind"] == "modbus"
    assert plc_status["endpoint"] == f"tcp://{HOST}:{plc.port}"
    assert plc_status["running"] is True and plc_status["online"] is True
    assert set(plc_status["counters"]) == COUNTERS
    assert plc_status["counters"]["reads"] > 0 and plc_status["counters"]["errors"] == 0
    assert mcu_status["name"] == "mcu" and mcu_status["kind"] == "serial"
    assert mcu_status["endpoint"] == device.url
    assert mcu_status["running"] is True and mcu_status["online"] is True
    assert set(mcu_status["counters"]) == COUNTERS | {"rejected"}  # serial counts one more
    assert mcu_status["counters"]["reads"] > 0 and mcu_status["counters"]["errors"] == 0

    # one by name: the same shape, live values
    response = api.get("/bridges/plc")
    assert response.status_code == 200, response.text
    one = conformance.check("/bridges/{name}", response)
    assert {k: v for k, v in one.items() if k != "counters"} == {
        k: v for k, v in plc_status.items() if k != "counters"
    }
    assert one["counters"]["reads"] >= plc_status["counters"]["reads"]
    response = api.get("/bridges/mcu")
    assert conformance.check("/bridges/{name}", response)["endpoint"] == device.url
    body = assert_error(api.get("/bridges/plc2"), 404, "bridge_not_found", known=["mcu", "plc"])
    assert "'plc2'" in body["message"]

    # the PLC goes away: its bridge keeps running (retrying), offline, errors counted
    plc.stop()
    down = wait_until(
        lambda: (s := api.get("/bridges/plc").json())["online"] is False
        and s["counters"]["errors"] > 0 and s,
        what="the modbus bridge offline with errors",
    )
    assert down["running"] is True
    assert down["counters"]["reads"] >= plc_status["counters"]["reads"]
    response = api.get("/bridges")
    listed = conformance.check("/bridges", response)
    assert [(b["name"], b["online"]) for b in listed][1] == ("mcu", True)
    conformance.check("/bridges/{name}", api.get("/bridges/plc"))

    # stopped bridges are listed as not running
    for bridge in bridges:
        bridge.stop()
    stopped = conformance.check("/bridges", api.get("/bridges"))
    assert [(b["running"], b["online"]) for b in stopped] == [(False, False), (False, False)]


# ------------------------------------------------------------------------------ the document


def test_openapi_documents_the_bridge_routes(make_client: Callable[..., Any]) -> None:
    spec = Conformance(make_client(start=False)).spec
    assert "Bridges" in [tag["name"] for tag in spec["tags"]]
    listing = spec["paths"]["/bridges"]["get"]
    one = spec["paths"]["/bridges/{name}"]["get"]
    assert set(spec["paths"]["/bridges"]) == {"get"} and set(spec["paths"]["/bridges/{name}"]) == {"get"}
    assert listing["tags"] == one["tags"] == ["Bridges"]
    assert listing["operationId"] == "list_bridges" and one["operationId"] == "get_bridge"

    def schema(operation: dict[str, Any], status: str) -> dict[str, Any]:
        return operation["responses"][status]["content"]["application/json"]["schema"]

    schemas = spec["components"]["schemas"]
    assert schema(one, "200") == {"$ref": "#/components/schemas/BridgeStatus"}
    assert schema(one, "404") == {"$ref": "#/components/schemas/ErrorResponse"}
    list_schema = schema(listing, "200")
    if "$ref" in list_schema:
        list_schema = schemas[list_schema["$ref"].rsplit("/", 1)[1]]
    assert list_schema["type"] == "array"
    assert list_schema["items"] == {"$ref": "#/components/schemas/BridgeStatus"}
    status = schemas["BridgeStatus"]
    assert set(status["required"]) == STATUS_KEYS == set(status["properties"])
    assert [p["name"] for p in one["parameters"]] == ["name"]
    assert one["parameters"][0]["in"] == "path"


# ------------------------------------------------------------------------------ create_app, token


def test_two_bridges_of_the_same_name_are_refused(
    make_dispatcher: Callable[..., OperationDispatcher],
) -> None:
    dispatcher = make_dispatcher()
    twins = [modbus_bridge(dispatcher, 5020, name="cell"), serial_bridge(dispatcher, "loop://", name="cell")]
    with pytest.raises(ValueError, match="two bridges are named .cell."):
        create_app(dispatcher, bridges=twins)
    assert not any(bridge.is_running for bridge in twins)


def test_with_a_token_the_bridge_routes_answer_401_without_it(
    make_client: Callable[..., Any], make_dispatcher: Callable[..., OperationDispatcher]
) -> None:
    dispatcher = make_dispatcher()
    api = make_client(dispatcher, start=False, token="s3cret",
                   bridges=[serial_bridge(dispatcher, "loop://")])
    for path in ("/bridges", "/bridges/mcu", "/bridges/nope"):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = api.get(path, headers=headers)
            assert_error(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    good = {"Authorization": "Bearer s3cret"}
    listed = api.get("/bridges", headers=good)
    assert listed.status_code == 200, listed.text
    assert [b["name"] for b in listed.json()] == ["mcu"]
    assert api.get("/bridges/mcu", headers=good).json()["endpoint"] == "loop://"
    assert_error(api.get("/bridges/nope", headers=good), 404, "bridge_not_found", known=["mcu"])


# ------------------------------------------------------------------------------ issue 10


def test_bridge_signals_are_read_only_over_http_and_others_get_a_default_max_age(
    make_client: Callable[..., Any],
    make_dispatcher: Callable[..., OperationDispatcher],
    device: SerialDeviceSimulator,
    bridges: list[BaseBridge],
) -> None:
    """A.5: PUT /signals/<bridge>.* answers 409 naming the owner and changes nothing; any
    other signal written without a max age gets the server's default, so it goes stale."""
    dispatcher = make_dispatcher()
    serial = serial_bridge(dispatcher, device.url)
    bridges.append(serial)
    api = make_client(dispatcher, bridges=bridges, signal_max_age_seconds=0.2)
    serial.start()
    wait_until(lambda: dispatcher.signals.holds("mcu.ready", True), what="mcu.ready")

    for name in ("mcu.online", "mcu.ready", "mcu.not_sent_yet"):
        response = api.put(f"/signals/{name}", json={"value": False, "max_age_seconds": 1e6})
        body = assert_error(response, 409, "signal_owned", owner="bridge mcu")
        assert f"'{name}'" in body["message"] and "read-only" in body["message"]
    assert dispatcher.signals.holds("mcu.online", True) and dispatcher.signals.holds("mcu.ready", True)
    assert dispatcher.signals.get("mcu.not_sent_yet") is None

    door = api.put("/signals/door.closed", json={"value": True})  # nobody owns door.*
    assert door.status_code == 200, door.text
    assert door.json()["max_age_seconds"] == 0.2  # the default: a client that dies is noticed
    wait_until(lambda: dispatcher.signals.get("door.closed").is_stale(), what="door.closed stale")
    explicit = api.put("/signals/door.closed", json={"value": True, "max_age_seconds": 30})
    assert explicit.json()["max_age_seconds"] == 30


def test_a_modbus_exception_response_is_a_configuration_error_in_last_error(
    make_client: Callable[..., Any],
    make_dispatcher: Callable[..., OperationDispatcher],
    plc: PlcSimulator,
    bridges: list[BaseBridge],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """E.19: a register outside the PLC's range: logged once without a traceback, reported in
    GET /bridges with its address and exception code; the valid signals keep flowing. A wrong
    device_id (every read refused) is offline, with the same reason."""
    caplog.set_level(logging.WARNING, logger="firmware_bridges.modbus")
    dispatcher = make_dispatcher()
    modbus = ModbusBridge(
        dispatcher, "plc", HOST, plc.port, poll_interval=0.01, timeout=0.5,
        reconnect_initial=0.02, reconnect_max=0.1,
        signals={
            "ready": {"kind": "discrete_input", "address": PlcSimulator.READY_INPUT},
            "cycles": {"kind": "input_register", "address": 0},
            "beyond": {"kind": "input_register", "address": 1}, "far": {"kind": "input_register",
                                                                         "address": 500},
        },
    )
    wrong_id = ModbusBridge(
        dispatcher, "plc9", HOST, plc.port, device_id=9, poll_interval=0.01, timeout=0.5,
        reconnect_initial=0.02, reconnect_max=0.1,
        signals={"ready": {"kind": "discrete_input", "address": PlcSimulator.READY_INPUT}},
    )
    bridges.extend([modbus, wrong_id])
    api = make_client(dispatcher, bridges=bridges)
    conformance = Conformance(api)
    for bridge in bridges:
        bridge.start()

    status = wait_until(lambda: (s := api.get("/bridges/plc").json())["last_error"] and s,
                        what="the configuration error in GET /bridges/plc")
    conformance.check("/bridges/{name}", api.get("/bridges/plc"))
    assert status["online"] is True
    assert "address 500" in status["last_error"] and "exception code 2" in status["last_error"]
    assert "ILLEGAL DATA ADDRESS" in status["last_error"]
    reads = status["counters"]["reads"]
    wait_until(lambda: modbus.counters["reads"] > reads + 20, what="polls to go on")
    assert dispatcher.signals.holds("plc.ready", True)  # the valid signals keep flowing
    assert not dispatcher.signals.get("plc.cycles").is_stale()
    assert not dispatcher.signals.get("plc.beyond").is_stale()  # its neighbour's refusal aside
    assert dispatcher.signals.get("plc.far") is None

    nine = wait_until(lambda: (s := api.get("/bridges/plc9").json())["last_error"] and s,
                      what="the wrong device_id reported")
    assert nine["online"] is False and not dispatcher.signals.holds("plc9.online", True)
    assert "device_id 9" in nine["last_error"] and "exception code" in nine["last_error"]
    wait_until(lambda: wrong_id.counters["reconnects"] >= 3, what="retries of plc9")

    records = [r for r in caplog.records if r.name == "firmware_bridges.modbus"]
    assert all(r.exc_info is None for r in records)  # no traceback
    far = [r for r in records if "address 500" in r.getMessage()]
    assert len(far) == 1 and "configuration error" in far[0].getMessage()
    nine_logs = [r for r in records if "device_id 9" in r.getMessage()]
    assert 1 <= len(nine_logs) <= 2  # the refusal, and plc9 going offline: not once per retry


def test_a_modbus_executor_and_a_signal_only_serial_bridge_record_what_the_devices_did(
    make_dispatcher: Callable[..., OperationDispatcher],
    bridges: list[BaseBridge],
) -> None:
    """A.2: the serial bridge (executor left at its default, off) feeds signals only; the PLC runs
    the job, and the dispatcher records the PLC's outcome (a success, then a failure)."""
    plc = PlcSimulator(HOST, cycle_time=0.05, ready=True, failing_programs={7: 42})
    device = SerialDeviceSimulator(run_seconds=0.01, signals={"tray": 1}, repeat_seconds=0.05)
    device.listen_tcp(HOST)
    plc.start()
    device.start()
    try:
        dispatcher = make_dispatcher()
        recorder = EventRecorder(dispatcher)
        modbus = ModbusBridge(
            dispatcher, "plc", HOST, plc.port, poll_interval=0.01, timeout=0.5,
            signals={"ready": {"kind": "discrete_input", "address": PlcSimulator.READY_INPUT}},
            executor={"program_register": 0, "start_coil": 0, "done_coil": 1, "error_coil": 2,
                      "error_code_register": 1},
        )
        serial = serial_bridge(dispatcher, device.url)
        assert serial.executor is False
        bridges.extend([modbus, serial])
        for bridge in bridges:
            bridge.start()
        dispatcher.start()
        wait_signal(dispatcher, "plc.online", True)
        wait_signal(dispatcher, "mcu.tray", 1)
        gate = {"plc.ready": True, "mcu.tray": 1}

        ok = dispatcher.add_operation(Operation(resource_id=dispatcher.resource_id,
                                                payload={"program": 3}, release_conditions=gate))
        done = recorder.wait_for(EventType.OPERATION_COMPLETED, operation_id=ok.id)[0]
        assert done.meta_data == {"bridge": "plc"}
        bad = dispatcher.add_operation(Operation(resource_id=dispatcher.resource_id,
                                                 payload={"program": 7}, release_conditions=gate))
        failed = recorder.wait_for(EventType.OPERATION_FAILED, operation_id=bad.id)[0]
        assert failed.meta_data == {"bridge": "plc", "plc_error_code": 42}
        assert plc.programs_run == [3, 7]  # what the PLC did, once each
        assert [m for m in device.received if m.kind == "RUN"] == []  # the serial device ran nothing
        assert dispatcher.get_operation(ok.id).outcome is ExecutionOutcome.SUCCESS
        assert dispatcher.get_operation(bad.id).outcome is ExecutionOutcome.FAILURE
        assert recorder.types(ok.id).count(EventType.OPERATION_FAILED) == 0
    finally:
        for bridge in bridges:
            bridge.stop()
        device.stop()
        plc.stop()


def test_the_default_max_age_of_http_signals_is_a_checked_config_key() -> None:
    """A.5: ``[http] signal_max_age_seconds`` (default 60 s) is what serve gives the app."""
    assert parse_config({}).http.signal_max_age_seconds == 60.0
    assert parse_config({"http": {"signal_max_age_seconds": 2.5}}).http.signal_max_age_seconds == 2.5
    for bad in (0, -1, "60", True, float("inf")):
        with pytest.raises(ConfigError) as raised:
            parse_config({"http": {"signal_max_age_seconds": bad}})
        assert raised.value.errors[0].startswith("http.signal_max_age_seconds: must be a number > 0")
