"""Every status entry is one snapshot (issue 12, item 9): ``POST /operations/add`` once answered
``"state": "RUNNING"`` with ``"is_current_operation": false``, because the operation and the
current one were read at two moments. Hammered here while the dispatcher starts and finishes
operations, over a real server, every answer must agree with itself."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from operation_dispatcher import DispatchEvent, EventType

ACTIVE = ("RUNNING", "PAUSED")


def _consistent(status: dict[str, Any]) -> bool:
    return status["is_current_operation"] is (status["operation"]["state"] in ACTIVE)


def test_status_entries_agree_with_themselves_while_operations_start_and_finish(make_api) -> None:
    api = make_api()
    dispatcher = api.dispatcher

    def finish_each_start(event: DispatchEvent) -> None:  # the machine: done as soon as started
        if event.event_type is EventType.OPERATION_STARTED:
            dispatcher.complete_operation(event.operation_id)

    first = api.post("/operations/add", json=[{"payload": {"n": 0}}]).json()
    # an add into an idle dispatcher starts at once: the answer says RUNNING *and* current
    assert first[0]["operation"]["state"] == "RUNNING", first
    assert first[0]["is_current_operation"] is True, first
    dispatcher.complete_operation(first[0]["operation"]["id"])
    dispatcher.subscribe(finish_each_start)

    def adder(worker: int) -> list[dict[str, Any]]:
        answers = []
        for n in range(30):
            response = api.post("/operations/add", json=[{"payload": {"w": worker, "n": n}}] * (1 + n % 2))
            assert response.status_code == 201, response.text
            answers.extend(response.json())
        return answers

    def reader(_: int) -> list[list[dict[str, Any]]]:
        lists = []
        for _n in range(40):
            lists.append(api.get("/operations").json())
            current = api.get("/operations/current")
            if current.status_code == 200:
                lists.append([current.json()])
        return lists

    with ThreadPoolExecutor(5, thread_name_prefix="snapshot-hammer") as pool:
        adds = [pool.submit(adder, worker) for worker in range(3)]
        reads = [pool.submit(reader, worker) for worker in range(2)]
        added = [status for future in adds for status in future.result()]
        listings = [listing for future in reads for listing in future.result()]

    assert len(added) == 3 * 45
    assert all(_consistent(status) for status in added), [s for s in added if not _consistent(s)]
    assert any(status["operation"]["state"] == "RUNNING" for status in added)  # the race was hit
    for listing in listings:
        assert all(_consistent(status) for status in listing), listing
        current = [n for n, status in enumerate(listing) if status["is_current_operation"]]
        assert current in ([], [0]), listing  # at most one, and listed first
    dispatcher.drain_events(10.0)
    for status in added:  # a single operation's status too
        answer = api.get(f"/operations/{status['operation']['id']}").json()
        assert _consistent(answer), answer
