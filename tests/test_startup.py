"""Starting Cueline the documented ways: configuration errors as one clean list (no traceback)
from every entry point, ``flask config check`` warnings and ``--connect``, and ``bin/run-all``
(what ``make run`` starts): one ready line, a pidfile, both processes stopped on a signal.

Every test runs the real command in a subprocess and checks its exact output and exit status.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from config import CONFIG_ERROR_EXIT_STATUS, setting_types
from tests.redis_server import RedisServer, RedisUnavailable, require_redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FLASK, GUNICORN = str(BIN / "flask"), str(BIN / "gunicorn")

#: A configuration with two unparsable values: both must be listed (in the order of
#: config.py), nothing else.
BAD = {"DB_POOL_SIZE": "many", "RATELIMIT_ENABLED": "perhaps"}
BAD_LIST = ("Invalid Cueline configuration:\n"
            "  - RATELIMIT_ENABLED: 'perhaps' is not a boolean (use true or false)\n"
            "  - DB_POOL_SIZE: 'many' is not an integer\n"
            "Nothing was started. Fix the settings above (environment or .env); "
            "`flask --app wsgi config check` validates them without starting anything.\n")


def _env(tmp_path, **settings) -> dict[str, str]:
    """The process environment without any Cueline setting, plus ``settings``; run from an
    empty directory's .env (none) so a developer's .env cannot leak in."""
    env = {k: v for k, v in os.environ.items()
           if k not in setting_types() and not k.startswith(("FLASK_", "PROMETHEUS_"))}
    env.update({"FLASK_APP": "wsgi", "ENV": "test",
                "DATABASE_URL": f"sqlite:///{tmp_path}/cueline.db"})
    env.update(settings)
    return env


def _run(args, env, timeout=120, cwd=ROOT):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _problem_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("  - ")]


# --- configuration errors -------------------------------------------------------------------


@pytest.mark.parametrize("command", [["db", "upgrade"], ["worker", "run", "--once"],
                                     ["users", "create", "x@example.com"],
                                     ["cues", "list"]])
def test_flask_commands_print_one_clean_list(tmp_path, command):
    result = _run([FLASK, *command], _env(tmp_path, **BAD))
    assert result.returncode == CONFIG_ERROR_EXIT_STATUS, result.stderr
    assert result.stderr == BAD_LIST
    assert result.stdout == ""


def test_gunicorn_exits_at_once_with_the_list(tmp_path):
    started = time.monotonic()
    result = _run([GUNICORN, "--bind", "127.0.0.1:0", "--workers", "2", "wsgi:app"],
                  _env(tmp_path, **BAD), timeout=60)
    assert result.returncode == CONFIG_ERROR_EXIT_STATUS
    assert result.stderr == BAD_LIST  # checked in the master: no worker was forked
    assert time.monotonic() - started < 15


def test_gunicorn_with_another_config_file_still_stops_without_respawning(tmp_path):
    """Without gunicorn.conf.py (``-c`` elsewhere) the workers refuse with status 4, which
    gunicorn's master treats as "App failed to load" and stops on."""
    empty = tmp_path / "other.conf.py"
    empty.write_text("")
    result = _run([GUNICORN, "-c", str(empty), "--bind", "127.0.0.1:0", "--workers", "2",
                   "wsgi:app"], _env(tmp_path, **BAD), timeout=60)
    # gunicorn itself may print a traceback of its HaltServer when both workers exit at once
    # (a race inside its arbiter); none comes from Cueline, and the master does stop.
    assert result.returncode != 0
    assert "ConfigError" not in result.stderr and "config.py" not in result.stderr
    assert "App failed to load" in result.stderr
    assert "  - DB_POOL_SIZE: 'many' is not an integer" in result.stderr


def test_make_run_prints_the_list_once(tmp_path):
    result = _run(["make", "--no-print-directory", "run", "PORT=1"],
                  _env(tmp_path, **BAD), timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.count("Invalid Cueline configuration:") == 1
    assert result.stderr.startswith(BAD_LIST), result.stderr
    assert not _problem_lines(result.stdout)


def test_validation_problems_are_listed_together(tmp_path):
    result = _run([FLASK, "db", "upgrade"], _env(
        tmp_path, EXTERNAL_AUTH_BACKEND="true", INTERNAL_AUTH_TOKEN="weak",
        POLLER_MAX_CATCH_UP_SLOTS="0"))
    assert result.returncode == CONFIG_ERROR_EXIT_STATUS
    assert "Traceback" not in result.stderr
    problems = _problem_lines(result.stderr)
    assert len(problems) == 2, result.stderr
    assert "weak" not in result.stderr  # the secret itself is never printed


# --- flask config check --------------------------------------------------------------------

PRODUCTION_RISKS = {"ENV": "production", "BASE_URL": "http://localhost:8000",
                    "WEB_CONCURRENCY": "3"}


def test_config_check_warns_about_production_risks(tmp_path):
    result = _run([FLASK, "config", "check", "--env-file", str(tmp_path / "none")],
                  _env(tmp_path, **PRODUCTION_RISKS))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Configuration OK\n")
    assert result.stderr.startswith("Warnings:\n")
    warnings = _problem_lines(result.stderr)
    starts = sorted(w.split(" ", 4)[3] for w in warnings)
    assert starts == ["BASE_URL", "DATABASE_URL", "RATELIMIT_STORAGE_URI", "SESSION_SECRET",
                      "SMTP_URL"], warnings
    assert "3 web processes" in result.stderr
    strict = _run([FLASK, "config", "check", "--strict", "--env-file",
                   str(tmp_path / "none")], _env(tmp_path, **PRODUCTION_RISKS))
    assert strict.returncode == 1 and _problem_lines(strict.stderr) == warnings


def test_config_check_is_quiet_for_a_sound_production_setup(tmp_path, pg_cluster):
    url = pg_cluster.create_database("config_check_sound")
    result = _run([FLASK, "config", "check", "--strict", "--env-file", str(tmp_path / "none")],
                  _env(tmp_path, ENV="production", DATABASE_URL=url,
                       BASE_URL="https://cueline.example.com", SESSION_SECRET="s" * 40,
                       SMTP_URL="smtp://u:p@127.0.0.1:25", MAIL_FROM="c@example.com",
                       WEB_CONCURRENCY="1"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_config_check_connect_reports_an_unreachable_database(tmp_path):
    url = "postgresql://cueline:hunter2secret@127.0.0.1:1/cueline"
    plain = _run([FLASK, "config", "check", "--env-file", str(tmp_path / "none")],
                 _env(tmp_path, DATABASE_URL=url, WEB_CONCURRENCY="1"))
    assert plain.returncode == 0  # without --connect nothing is contacted
    result = _run([FLASK, "config", "check", "--connect", "--env-file",
                   str(tmp_path / "none")], _env(tmp_path, DATABASE_URL=url, WEB_CONCURRENCY="1"))
    assert result.returncode == 1
    assert result.stderr.startswith("Connection problems:\n  - DATABASE_URL: cannot connect to "
                                    "postgresql+psycopg://cueline:***@127.0.0.1:1/cueline: ")
    assert "hunter2secret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_config_check_connect_checks_migrations_and_redis(tmp_path, pg_cluster):
    url = pg_cluster.create_database("config_check_connect")
    env = _env(tmp_path, DATABASE_URL=url, WEB_CONCURRENCY="1",
               RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0")
    check = [FLASK, "config", "check", "--connect", "--env-file", str(tmp_path / "none")]
    result = _run(check, env)
    assert result.returncode == 1
    problems = _problem_lines(result.stderr)
    assert len(problems) == 2, result.stderr
    assert "schema is at empty" in problems[0] and "flask --app wsgi db upgrade" in problems[0]
    assert problems[1].startswith("  - RATELIMIT_STORAGE_URI: cannot reach Redis at "
                                  "redis://127.0.0.1:1/0")
    assert _run([FLASK, "db", "upgrade"], env).returncode == 0
    try:
        with RedisServer() as redis:
            env["RATELIMIT_STORAGE_URI"] = redis.url
            result = _run(check, env)
    except RedisUnavailable as exc:
        if require_redis():
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    assert result.returncode == 0, result.stderr
    assert "  database: connected to postgresql+psycopg://" in result.stdout
    assert "schema up to date" in result.stdout
    assert f"  redis: connected to {redis.url}" in result.stdout


def test_config_check_connect_on_a_missing_sqlite_file(tmp_path):
    result = _run([FLASK, "config", "check", "--connect", "--env-file", str(tmp_path / "none")],
                  _env(tmp_path, WEB_CONCURRENCY="1"))
    assert result.returncode == 1
    assert result.stderr == ("Connection problems:\n  - DATABASE_URL: the SQLite file "
                             f"{tmp_path}/cueline.db does not exist yet; create it with: "
                             "flask --app wsgi db upgrade\n")


# --- bin/run-all (make run) ----------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def _start_run_all(tmp_path, port, pidfile):
    env = _env(tmp_path, CUELINE_PIDFILE=str(pidfile), LOG_LEVEL="WARNING",
               VENV_BIN=str(BIN))
    assert _run([FLASK, "db", "upgrade"], env).returncode == 0
    return subprocess.Popen([str(ROOT / "bin" / "run-all"), "--bind", f"127.0.0.1:{port}",
                             "--workers", "1", "wsgi:app"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            stdin=subprocess.DEVNULL)


def _ready_line(process) -> str:
    line = process.stdout.readline()  # the only line run-all itself prints
    assert line, "run-all exited before it was ready"
    return line


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_run_all_prints_ready_writes_a_pidfile_and_stops_both(tmp_path, stop_signal):
    port, pidfile = _free_port(), tmp_path / "run" / "cueline.pid"
    process = _start_run_all(tmp_path, port, pidfile)
    try:
        line = _ready_line(process)
        url = f"http://127.0.0.1:{port}"
        assert line == (f"Cueline ready at {url} — API docs {url}/docs, health {url}/health "
                        f"(pidfile {pidfile}; Ctrl-C stops web and worker)\n")
        assert pidfile.read_text().strip() == str(process.pid)
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        assert httpx.get(f"{url}/docs", timeout=10).status_code == 200
        children = _children(process.pid)
        commands = [Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ")
                    for c in children if Path(f"/proc/{c}/cmdline").exists()]
        assert any(b"gunicorn" in c for c in commands) and \
            any(b"worker run" in c for c in commands), commands
        # a second instance with the same pidfile refuses to start
        second = _run([str(ROOT / "bin" / "run-all"), "--bind", f"127.0.0.1:{_free_port()}",
                       "wsgi:app"], _env(tmp_path, CUELINE_PIDFILE=str(pidfile),
                                         VENV_BIN=str(BIN)), timeout=60)
        assert second.returncode == 1
        assert second.stderr == f"Cueline already runs (pid {process.pid}, pidfile {pidfile})\n"
        process.send_signal(stop_signal)
        assert process.wait(timeout=60) == 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(Path(f"/proc/{c}").exists()
                                                  for c in children):
            time.sleep(0.2)
        assert not [c for c in children if Path(f"/proc/{c}").exists()
                    and "Z" not in Path(f"/proc/{c}/stat").read_text().rsplit(")", 1)[1][:3]]
        assert not pidfile.exists()
    finally:
        if process.poll() is None:
            process.kill()


def test_run_all_stops_the_web_server_when_the_worker_dies(tmp_path):
    port, pidfile = _free_port(), tmp_path / "cueline.pid"
    process = _start_run_all(tmp_path, port, pidfile)
    try:
        _ready_line(process)
        children = _children(process.pid)
        # The flask worker, not gunicorn (whose "--workers 1" argument also says "worker").
        worker = next(c for c in children
                      if b"\0worker\0run" in Path(f"/proc/{c}/cmdline").read_bytes())
        os.kill(worker, signal.SIGKILL)
        assert process.wait(timeout=60) == 1
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
