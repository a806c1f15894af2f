"""The Celery configuration the contract asks for."""

from __future__ import annotations

from typing import Any

from celeryconfig import config_for
from core.settings import Settings
from workers.celery_app import app


def _settings(**values: Any) -> Settings:
    return Settings(jwt_secret="x" * 32, **values)


def test_json_only_late_acks_prefetch_one_and_explicit_time_limits():
    config = config_for(_settings())
    assert config["task_serializer"] == "json" and config["accept_content"] == ["json"]
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1
    assert 0 < config["task_soft_time_limit"] < config["task_time_limit"]
    options = config["broker_transport_options"]
    assert options["visibility_timeout"] > config["task_time_limit"]


def test_celery_keys_live_under_the_redis_prefix():
    config = config_for(_settings(redis_prefix="acme", redis_url="redis://cache:6379/3"))
    assert config["broker_url"] == "redis://cache:6379/3"
    assert config["broker_transport_options"]["global_keyprefix"] == "acme:celery:"
    assert "result_backend" not in config and config["task_ignore_result"]


def test_beat_sweeps_the_outbox_purges_and_checks_schedules():
    schedule = config_for(_settings(outbox_sweep_seconds=2))["beat_schedule"]
    tasks = {entry["task"]: entry for entry in schedule.values()}
    assert tasks["finrt.sweep_outbox"]["schedule"] == 2
    assert tasks["finrt.check_schedules"]["schedule"] == 60
    assert {"finrt.purge_notifications", "finrt.check_stale_jobs"} <= set(tasks)


def test_the_worker_app_registers_every_task():
    app.loader.import_default_modules()
    assert {
        "finrt.process_file",
        "finrt.generate_report",
        "finrt.sweep_outbox",
        "finrt.check_schedules",
        "finrt.purge_notifications",
        "finrt.check_stale_jobs",
    } <= set(app.tasks)
