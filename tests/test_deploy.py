"""The recipes under deploy/ work: what can run on this machine runs.

* The systemd units are parsed and their ``ExecStartPre`` / ``ExecStart`` commands run, with the
  environment of ``deploy/cueline.env.example``, against a throwaway PostgreSQL database and a
  throwaway Redis; then they are stopped with the units' ``KillSignal`` within
  ``TimeoutStopSec``.
* ``deploy/compose.yaml`` is parsed with PyYAML; the migrate, web and worker commands run with
  the compose environment, its service host names pointed at the local servers.
* The Procfile's commands run the same way.
* ``deploy/nginx/cueline.conf`` passes ``nginx -t`` (Debian's nginx package, installed by
  ``make system-deps``), and nginx serves Cueline through it.

Docker itself cannot run here (no container engine), so the image is not built: the test checks
that every file the Dockerfile copies exists and that its command is the compose web command.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from config import setting_types
from tests.redis_server import RedisServer, RedisUnavailable, require_redis

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
INSTALL_PREFIX = "/opt/cueline/.venv/bin/"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _unit(name: str) -> dict[str, list[str]]:
    """A systemd unit's [Service] section as ``{key: [values…]}`` (keys may repeat)."""
    values: dict[str, list[str]] = {}
    section = None
    for raw in (DEPLOY / "systemd" / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        if section == "Service":
            values.setdefault(key, []).append(value)
    return values


def _env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value
    return env


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in setting_types() and not k.startswith(("FLASK_", "PROMETHEUS_"))}


@pytest.fixture
def redis_url():
    try:
        with RedisServer() as server:
            yield server.url
    except RedisUnavailable as exc:
        if require_redis():
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def _local_command(command: str, port: int) -> list[str]:
    """A documented command as argv on this checkout: the install prefix replaced by this
    virtualenv, and the listening port by a free one."""
    argv = shlex.split(command.replace(INSTALL_PREFIX, f"{BIN}/"))
    if argv[0] in ("gunicorn", "flask"):
        argv[0] = str(BIN / argv[0])
    return [re.sub(r"^(--bind=?|)((?:0\.0\.0\.0|127\.0\.0\.1)):8000$", rf"\g<1>127.0.0.1:{port}", a)
            for a in argv]


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        try:
            response = httpx.get(f"{url}/health", timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered /health")


def _stop(process: subprocess.Popen, sig: int, within: float) -> int:
    process.send_signal(sig)
    return process.wait(timeout=within)


def _start(argv, env) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def _run_web_and_worker(web_argv, worker_argv, env, port, kill_signal=signal.SIGTERM,
                        stop_within=30.0) -> dict:
    web = _start(web_argv, env)
    worker = _start(worker_argv, env)
    try:
        health = _wait_healthy(f"http://127.0.0.1:{port}", web)
        time.sleep(3)  # the worker has started its loop (or died of its configuration)
        assert worker.poll() is None, worker.communicate()[1][-3000:]
        assert _stop(web, kill_signal, stop_within) == 0
        assert _stop(worker, kill_signal, stop_within) == 0
        return health
    finally:
        for process in (web, worker):
            if process.poll() is None:
                process.kill()
                process.wait()


# --- systemd -------------------------------------------------------------------------------

def test_systemd_units_run_against_postgresql(pg_cluster, redis_url, tmp_path):
    web, worker = _unit("cueline-web.service"), _unit("cueline-worker.service")
    assert web["EnvironmentFile"] == worker["EnvironmentFile"] == ["/etc/cueline/cueline.env"]
    assert web["User"] == worker["User"] == ["cueline"]
    assert "--forwarded-allow-ips=127.0.0.1" in web["ExecStart"][0]
    port = _free_port()
    env = {**_base_env(), **_env_file(DEPLOY / "cueline.env.example")}
    assert env["ENV"] == "production"
    for line in web["Environment"] + worker["Environment"]:
        key, _, value = line.partition("=")
        env[key] = value.replace("/run/cueline", str(tmp_path))
    env.update({"DATABASE_URL": pg_cluster.create_database("deploy_systemd"),
                "RATELIMIT_STORAGE_URI": redis_url, "SMTP_URL": "", "MAIL_FROM": "",
                "BASE_URL": f"http://127.0.0.1:{port}", "LOG_LEVEL": "WARNING"})
    # ExecStartPre: the migrations, from an empty database
    [pre] = web["ExecStartPre"]
    migrated = subprocess.run(_local_command(pre, port), cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    kill = getattr(signal, web["KillSignal"][0])
    stop_within = float(web["TimeoutStopSec"][0])
    health = _run_web_and_worker(_local_command(web["ExecStart"][0], port),
                                 _local_command(worker["ExecStart"][0], port), env, port,
                                 kill, stop_within)
    assert health["services"]["database"] == "ok"
    # the multiprocess directory the units name was created and used
    assert (tmp_path / "metrics").is_dir()
    # RestartPreventExitStatus matches the status of a configuration error
    from config import CONFIG_ERROR_EXIT_STATUS

    assert web["RestartPreventExitStatus"] == [str(CONFIG_ERROR_EXIT_STATUS)]


def test_procfile_commands_run(pg_cluster, tmp_path):
    processes = dict(line.split(": ", 1) for line in
                     (DEPLOY / "Procfile").read_text().splitlines() if line.strip())
    assert set(processes) == {"release", "web", "worker"}
    port = _free_port()
    env = {**_base_env(), "ENV": "test", "PORT": str(port), "LOG_LEVEL": "WARNING",
           "DATABASE_URL": pg_cluster.create_database("deploy_procfile")}

    def argv(command):  # the platform runs it through a shell (variables expand)
        return ["bash", "-c", f"export PATH={BIN}:$PATH; exec {command}"]

    release = subprocess.run(argv(processes["release"]), cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert release.returncode == 0, release.stderr
    health = _run_web_and_worker(argv(processes["web"]), argv(processes["worker"]), env, port)
    assert health["status"] == "healthy"


# --- compose --------------------------------------------------------------------------------

def test_compose_services_and_commands(pg_cluster, redis_url, tmp_path):
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker"}
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert services["migrate"]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert services["web"]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"}
    # one environment for all three Cueline services
    environment = services["web"]["environment"]
    assert services["worker"]["environment"] == services["migrate"]["environment"] == environment
    database = urlsplit_host(environment["DATABASE_URL"])
    assert database == "postgres:5432"
    assert environment["RATELIMIT_STORAGE_URI"] == "redis://redis:6379/0"

    local_db = pg_cluster.create_database("deploy_compose")
    local_db_hostport = urlsplit_host(local_db)
    port = _free_port()
    env = _base_env()
    for key, value in environment.items():
        value = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m[1], m[2]), str(value))
        env[key] = value
    env.update({
        # the compose host names → this machine's servers, credentials → the throwaway ones
        "DATABASE_URL": local_db, "RATELIMIT_STORAGE_URI": redis_url,
        "BASE_URL": f"http://127.0.0.1:{port}", "LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")})
    assert local_db_hostport.startswith("127.0.0.1:")

    def argv(service):
        command = services[service]["command"]
        command = [str(BIN / command[0]) if command[0] in ("flask", "gunicorn") else command[0],
                   *command[1:]]
        return [a.replace("0.0.0.0:8000", f"127.0.0.1:{port}") for a in command]

    migrated = subprocess.run(argv("migrate"), cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    metrics_port = _free_port()
    worker = [a.replace("0.0.0.0:9101", f"127.0.0.1:{metrics_port}") for a in argv("worker")]
    assert "--metrics-bind" in worker
    web = _start(argv("web"), env)
    worker_process = _start(worker, env)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", web)
        token = environment["METRICS_TOKEN"].split(":-", 1)[-1].rstrip("}")
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10,
                            headers={"Authorization": f"Bearer {token}"})
        assert scraped.status_code == 200 and "cueline_queue_depth" in scraped.text
        deadline = time.monotonic() + 30
        while True:
            try:
                text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and worker_process.poll() is None
                time.sleep(0.3)
        assert "cueline_scheduler_lateness_seconds" in text
        assert _stop(web, signal.SIGTERM, 30) == 0
        assert _stop(worker_process, signal.SIGTERM,
                     float(services["worker"]["stop_grace_period"].rstrip("s"))) == 0
    finally:
        for process in (web, worker_process):
            if process.poll() is None:
                process.kill()
                process.wait()


def urlsplit_host(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def test_dockerfile_copies_what_exists_and_runs_the_compose_command():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in shlex.split(line)[1:-1]:
                assert (ROOT / source).exists(), source
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    import json

    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert json.loads(cmd.group(1)) == compose["services"]["web"]["command"]


# --- nginx ----------------------------------------------------------------------------------

def _nginx() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK)
                                     else None)


@pytest.mark.skipif(_nginx() is None, reason="nginx is not installed (make system-deps "
                    "installs Debian's nginx package); deploy/nginx/cueline.conf not checked")
def test_nginx_snippet_passes_nginx_t_and_proxies(make_app, live_server, tmp_path):
    snippet = (DEPLOY / "nginx" / "cueline.conf").read_text()
    assert "--forwarded-allow-ips" in snippet and "X-Forwarded-For" in snippet
    # nginx -t on the snippet as written, inside a minimal main configuration (certificates
    # made on the spot, because the snippet names the usual paths of real ones)
    certs = tmp_path / "certs"
    certs.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=cueline.example.com", "-keyout", str(certs / "key.pem"),
                    "-out", str(certs / "cert.pem")], check=True, capture_output=True)
    as_written = snippet.replace("/etc/ssl/certs/cueline.example.com.pem",
                                 str(certs / "cert.pem")).replace(
        "/etc/ssl/private/cueline.example.com.key", str(certs / "key.pem"))
    server = live_server(make_app())
    backend_port = server.url.rsplit(":", 1)[1]
    http_port, https_port = _free_port(), _free_port()
    local = (as_written.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{backend_port};")
             .replace("listen 80;", f"listen 127.0.0.1:{http_port};")
             .replace("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"))
    for name, body in (("written.conf", as_written), ("local.conf", local)):
        (tmp_path / name).write_text(body)
    for name in ("written.conf", "local.conf"):
        main = tmp_path / f"nginx-{name}"
        main.write_text(f"""
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    include {tmp_path}/{name};
}}
""")
        checked = subprocess.run([_nginx(), "-t", "-p", str(tmp_path), "-c", str(main)],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stderr
        assert "syntax is ok" in checked.stderr and "test is successful" in checked.stderr
    nginx = subprocess.Popen([_nginx(), "-p", str(tmp_path), "-c",
                              str(tmp_path / "nginx-local.conf"), "-g", "daemon off;"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"https://127.0.0.1:{https_port}/health", verify=False,
                                     headers={"Host": "cueline.example.com"}, timeout=5)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and nginx.poll() is None
                time.sleep(0.2)
        assert response.status_code == 200 and response.json()["status"] == "healthy"
        redirect = httpx.get(f"http://127.0.0.1:{http_port}/health",
                             headers={"Host": "cueline.example.com"}, timeout=5)
        assert redirect.status_code == 301
        assert redirect.headers["location"] == "https://cueline.example.com/health"
    finally:
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(timeout=30)


def test_deploy_files_are_all_tested():
    """Every recipe under deploy/ is covered by a test in this file."""
    files = sorted(str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*") if p.is_file())
    assert files == ["Dockerfile", "Procfile", "compose.yaml", "cueline.env.example",
                     "nginx/cueline.conf", "systemd/cueline-web.service",
                     "systemd/cueline-worker.service"]
    # configparser reads the units (a sanity check of their syntax, duplicate keys allowed)
    for unit in ("cueline-web.service", "cueline-worker.service"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str
        parser.read(DEPLOY / "systemd" / unit)
        assert {"Unit", "Service", "Install"} <= set(parser.sections())
