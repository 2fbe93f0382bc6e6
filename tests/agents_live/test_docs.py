"""The worked examples of docs/messaging.md ("Live sessions", "IPC attachments") run as written.

Each ``$ curl`` command of those sections is sent, in order, to a test app (the documented
agent id replaced by a real one, ``$KEY`` by a real key), and its answer is compared with the
output the page shows: the status for ``-w "%{http_code}"``, else every documented key whose
value is not elided (``…``) or a timestamp.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path

import app.db as app_db
from tests.agents_live.conftest import Owner

DOC = (Path(__file__).resolve().parents[2] / "docs" / "messaging.md").read_text()
DOC_AGENT = "agt_3k9x0m2p7q1z"
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT")
_PAIR = re.compile(r'"(\w+)": ("(?:[^"\\…]|\\.)*"|true|false|null|-?\d+)(?=[,}])')


def _section() -> str:
    start = DOC.index("## Live sessions")
    return DOC[start:DOC.index("\n## ", DOC.index("## IPC attachments"))]


def _examples() -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for every ``$ curl`` of the sections."""
    examples: list[tuple[str, list[str]]] = []
    lines = [line.strip() for line in _section().splitlines()]
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ curl"):
            i += 1
            continue
        command = lines[i][2:]
        while command.endswith("\\"):
            i += 1
            command = command[:-1] + " " + lines[i]
        output = []
        i += 1
        while i < len(lines) and lines[i] and not lines[i].startswith(("$", "```")):
            output.append(lines[i])
            i += 1
        examples.append((command, output))
    return examples


def _request(command: str, key: str, agent_id: str) -> dict:
    args = shlex.split(command.replace("$KEY", key).replace(DOC_AGENT, agent_id))
    assert args[0] == "curl"
    request = {"method": None, "headers": {}, "data": None, "write_out": None, "url": None}
    it = iter(args[1:])
    for arg in it:
        if arg == "-X":
            request["method"] = next(it)
        elif arg == "-H":
            name, _, value = next(it).partition(": ")
            request["headers"][name] = value
        elif arg == "-d":
            request["data"] = next(it)
        elif arg == "-w":
            request["write_out"] = next(it)
        elif arg == "-o":
            next(it)
        elif arg.startswith("localhost:8000"):
            request["url"] = arg[len("localhost:8000"):]
        else:
            assert arg == "-s", arg
    request["method"] = request["method"] or ("POST" if request["data"] else "GET")
    return request


def _check(expected: str, actual) -> None:
    """Every pair of ``expected`` (a line of JSON, maybe elided) matches ``actual``."""
    if expected.startswith("["):
        elements = expected[1:-1].split("}, {")
        assert len(actual) == len(elements), actual
        for element, item in zip(elements, actual, strict=True):
            _check("{" + element.strip("{}") + "}", item)
        return
    for key, raw in _PAIR.findall(expected):
        value = json.loads(raw)
        if isinstance(value, str) and _TIMESTAMP.match(value):
            continue
        assert actual[key] == value, (key, actual)


def test_the_documented_examples_run_as_written(client, monkeypatch):
    # A clock that ticks a microsecond per reading: an order of events, ages all 0.
    ticks = itertools.count()
    start = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    monkeypatch.setattr(app_db, "clock", lambda: start + timedelta(microseconds=next(ticks)))
    owner = Owner(client)
    examples = _examples()
    assert len(examples) >= 8
    for command, output in examples:
        request = _request(command, owner.key, owner.agent_id)
        response = client.open(request["url"], method=request["method"],
                               headers=request["headers"], data=request["data"])
        assert response.status_code < 300, (command, response.get_json())
        if request["write_out"]:
            assert request["write_out"] == "%{http_code}\\n"
            assert output == [str(response.status_code)], command
            continue
        assert len(output) == 1, command
        _check(output[0].replace(DOC_AGENT, owner.agent_id), response.get_json())
