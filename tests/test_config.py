"""Typed configuration: parsing, validation, start-up refusal, and the documented table."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app import create_app
from config import Config, ConfigError, load_config, setting_types, validate

ROOT = Path(__file__).resolve().parent.parent
STRONG = "s" * 32


@pytest.mark.parametrize("raw,expected", [("true", True), ("1", True), ("YES", True),
                                          ("on", True), ("false", False), ("0", False),
                                          ("", False), ("Off", False)])
def test_booleans(raw, expected):
    assert load_config({"DISABLE_CUE_PRIMITIVE": raw})["DISABLE_CUE_PRIMITIVE"] is expected


def test_bad_boolean_names_the_variable():
    with pytest.raises(ConfigError) as info:
        load_config({"EXTERNAL_AUTH_BACKEND": "maybe"})
    assert "EXTERNAL_AUTH_BACKEND" in str(info.value)
    assert "'maybe'" in str(info.value)


def test_bad_integer_names_the_variable_and_all_problems_are_listed():
    with pytest.raises(ConfigError) as info:
        load_config({"DB_POOL_SIZE": "five", "DISABLE_QUOTA_ENFORCEMENT": "perhaps"})
    assert len(info.value.problems) == 2
    assert any(p.startswith("DB_POOL_SIZE") for p in info.value.problems)


def test_create_app_raises_an_ordinary_exception():
    with pytest.raises(ConfigError) as info:
        create_app({"ENV": "test", "DB_POOL_SIZE": "x"})
    assert not isinstance(info.value, SystemExit)
    assert isinstance(info.value, Exception)


@pytest.mark.parametrize("token", ["", "short-token"])
def test_delegation_requires_a_strong_token(token):
    values = load_config({"EXTERNAL_AUTH_BACKEND": "true", "INTERNAL_AUTH_TOKEN": token})
    problems = validate(values)
    assert len(problems) == 1
    assert "INTERNAL_AUTH_TOKEN" in problems[0]
    assert "secrets.token_urlsafe" in problems[0]
    with pytest.raises(ConfigError):
        create_app({"ENV": "test", "EXTERNAL_AUTH_BACKEND": "true", "INTERNAL_AUTH_TOKEN": token})


def test_weak_token_problem_never_echoes_the_token():
    problems = validate(load_config({"EXTERNAL_AUTH_BACKEND": "1",
                                     "INTERNAL_AUTH_TOKEN": "hunter2-secret"}))
    assert "hunter2" not in " ".join(problems)


def test_strong_token_is_accepted():
    config = load_config({"EXTERNAL_AUTH_BACKEND": "1", "INTERNAL_AUTH_TOKEN": STRONG})
    assert validate(config) == []


def test_other_validation_rules():
    problems = validate(load_config({"ENV": "staging", "SESSION_SECRET": "short",
                                     "DATABASE_URL": "mysql://u:pw@h/db", "LOG_LEVEL": "loud"}))
    text = "\n".join(problems)
    assert "ENV" in text and "SESSION_SECRET" in text and "LOG_LEVEL" in text
    assert "unsupported database 'mysql'" in text
    assert "pw" not in text


def test_postgres_urls_use_psycopg3():
    for url in ("postgres://u@h/db", "postgresql://u@h/db"):
        assert load_config({"DATABASE_URL": url})["DATABASE_URL"] == \
            "postgresql+psycopg://u@h/db"


def test_env_file_then_environment(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("BASE_URL=https://from-file.example\nLOG_LEVEL=DEBUG\n")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    values = load_config(None, env_file=str(env_file))
    assert values["BASE_URL"] == "https://from-file.example"
    assert values["LOG_LEVEL"] == "WARNING"


def test_defaults_when_nothing_is_set():
    values = load_config({})
    for name in setting_types():
        assert values[name] == (getattr(Config, name) if name != "DATABASE_URL" else "")


def test_every_setting_is_documented():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", doc, flags=re.M))
    assert documented == set(setting_types()), (
        f"undocumented: {set(setting_types()) - documented}; "
        f"documented but unknown: {documented - set(setting_types())}")


def _run(args, env, timeout=60):
    base = {k: v for k, v in os.environ.items()
            if k not in setting_types() and not k.startswith("FLASK_")}
    return subprocess.run(args, cwd=ROOT, env={**base, **env}, capture_output=True, text=True,
                          timeout=timeout)


def test_flask_config_check(tmp_path):
    flask = str(Path(sys.executable).parent / "flask")
    bad = _run([flask, "config", "check", "--env-file", str(tmp_path / "none")],
               {"EXTERNAL_AUTH_BACKEND": "true", "INTERNAL_AUTH_TOKEN": "weak",
                "DB_POOL_SIZE": "many"})
    assert bad.returncode == 1
    assert "weak" not in bad.stderr  # the secret itself is never printed
    assert "DB_POOL_SIZE" in bad.stderr
    weak = _run([flask, "config", "check", "--env-file", str(tmp_path / "none")],
                {"EXTERNAL_AUTH_BACKEND": "true", "INTERNAL_AUTH_TOKEN": "weak"})
    assert weak.returncode == 1
    assert "INTERNAL_AUTH_TOKEN is 4 characters" in weak.stderr
    good = _run([flask, "config", "check", "--env-file", str(tmp_path / "none")],
                {"EXTERNAL_AUTH_BACKEND": "true", "INTERNAL_AUTH_TOKEN": STRONG,
                 "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert good.returncode == 0, good.stderr
    assert "Configuration OK" in good.stdout
    assert STRONG not in good.stdout


def test_gunicorn_refuses_to_start_with_a_weak_token(tmp_path):
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    started = time.monotonic()
    result = _run([gunicorn, "--bind", "127.0.0.1:0", "--workers", "2", "wsgi:app"],
                  {"EXTERNAL_AUTH_BACKEND": "true", "INTERNAL_AUTH_TOKEN": "short",
                   "DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "ENV": "test"}, timeout=60)
    assert result.returncode != 0
    assert time.monotonic() - started < 30
    assert "INTERNAL_AUTH_TOKEN" in result.stderr


@pytest.mark.parametrize("concurrency, expected", [(None, os.cpu_count()), ("3", 3)])
def test_gunicorn_from_a_checkout_runs_one_sync_worker_per_core(concurrency, expected):
    """gunicorn.conf.py: the measured default, and WEB_CONCURRENCY to choose another count."""
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    env = {"WEB_CONCURRENCY": concurrency} if concurrency else {}
    base = {k: v for k, v in os.environ.items() if k != "WEB_CONCURRENCY"}
    result = subprocess.run([gunicorn, "--print-config", "wsgi:app"], cwd=ROOT,
                            env={**base, **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    settings = {name.strip(): value.strip() for name, _, value in
                (line.partition("=") for line in result.stdout.splitlines())}
    assert int(settings["workers"]) == expected
    assert settings["worker_class"] == "sync"


@pytest.mark.parametrize("value,ok", [("0", True), ("5", True), ("3600", True), ("-1", False),
                                      ("nan", False), ("3601", False)])
def test_db_ping_idle_seconds_bounds(value, ok):
    problems = validate(load_config({"DB_PING_IDLE_SECONDS": value}, env_file=None))
    assert any("DB_PING_IDLE_SECONDS" in p for p in problems) is not ok, problems
