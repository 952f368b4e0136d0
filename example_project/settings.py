"""Settings of the example course platform that uses course_plugins."""

from __future__ import annotations

import os
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-insecure-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_celery_beat",
    "course_plugins",
    "example_project.courses",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # What api.users.get_current() returns; after AuthenticationMiddleware.
    "course_plugins.middleware.CurrentUserMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "example_project.wsgi.application"

if os.environ.get("DATABASE_URL"):
    import dj_database_url

    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"])}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            "OPTIONS": {"timeout": 20},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = "courses@example.com"

COURSE_PLUGINS = {
    "PLUGIN_DIRS": [os.environ.get("COURSE_PLUGIN_DIRS", str(BASE_DIR / "plugin_dirs"))],
    "MODEL_HOOKS": {
        "courses.Course": {"name": "course", "organization": "organization"},
        "courses.Quiz": {"name": "quiz", "organization": "course__organization"},
        "courses.Content": {"name": "content", "organization": "course__organization"},
    },
    # Plugins can be activated and configured per organization; an organization's admins
    # (Organization.admins) manage its plugins when granted
    # course_plugins.manage_organization_plugins.
    "ORGANIZATION_MODEL": "courses.Organization",
    "ORGANIZATION_ADMINS": "admins",
}

REST_FRAMEWORK = {
    # drf-spectacular's schema, with the error answers (400/401/403/404/413/415/503) documented.
    "DEFAULT_SCHEMA_CLASS": "course_plugins.rest.openapi.AutoSchema",
    # JSON bodies bounded: 413 over the size limit, 400 for NUL, lone surrogates, deep nesting.
    "DEFAULT_PARSER_CLASSES": ["course_plugins.rest.parsers.JSONParser"],
    # A plugin's veto (a Django ValidationError from the signal bridge) answers 400, not 500; the
    # database down answers 503 with Retry-After; every error is JSON.
    "EXCEPTION_HANDLER": "course_plugins.rest.exceptions.exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "course_plugins API",
    "DESCRIPTION": "Manage the plugins of a course platform.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # One handler, on the root logger: a Celery worker replaces the root's handlers with its own,
    # so each line is written once there too.
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "course_plugins": {"level": "INFO"},
    },
}

# --- Scale-out: Celery, the shared cache, cross-process sync --------------------------------
# Without a server: kombu's filesystem broker under var/ and a file cache that every process of
# this machine shares (`make demo`). With CELERY_BROKER_URL / REDIS_URL pointing at Redis, the
# same code runs on Redis for both. Beat keeps its schedules in the database (django-celery-beat).
VAR_DIR = Path(os.environ.get("COURSE_VAR_DIR", str(BASE_DIR / "var")))
REDIS_URL = os.environ.get("REDIS_URL", "")
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or REDIS_URL or "filesystem://"
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = VAR_DIR / "celery" / "queue"
    _control_dir = VAR_DIR / "celery" / "control"
    for _folder in (_queue_dir, _control_dir):
        _folder.mkdir(parents=True, exist_ok=True)  # kombu lists them and fails when missing
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "control_folder": str(_control_dir),
    }
else:
    # Redis. Background events are acknowledged late (after their handlers ran): a message held
    # by a worker that died goes back to the queue once it has been unacknowledged for
    # visibility_timeout seconds, looked for every second (kombu's defaults, 1 h and every
    # 10 x 10 s, mean minutes). It must exceed the longest task (HOOK_TIMEOUT bounds plugin
    # code) and the longest countdown of a one-shot schedule (claimed once, so a redelivered one
    # does not run twice). Socket timeouts: a frozen Redis does not block a worker forever;
    # requests use shorter ones of their own (site/outbox.py, CACHES below).
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": 30,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        # The lock a worker takes while it restores: a worker killed holding it (it restores
        # every second) would otherwise block every restore for kombu's default of 5 minutes.
        "unacked_mutex_expire": 10,
        "socket_connect_timeout": 1,
        "socket_timeout": 5,
    }
    if os.environ.get("CELERY_BROKER_TRANSPORT_OPTIONS"):
        # JSON, e.g. {"visibility_timeout": 3600}, merged over the above.
        import json

        CELERY_BROKER_TRANSPORT_OPTIONS.update(
            json.loads(os.environ["CELERY_BROKER_TRANSPORT_OPTIONS"])
        )
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = os.environ.get("CELERY_TASK_ALWAYS_EAGER") == "1"
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # with acks_late: a dying worker holds at most one message
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Sending a task from a request must not hang on a broker outage: 1 s to connect, one quick retry.
# Background events do not depend on it (they go through the outbox, relayed until the broker
# takes them); schedules set in a request report the failure.
CELERY_BROKER_CONNECTION_TIMEOUT = 1
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2,
}
# Every worker relays the outbox itself; beat also runs the relay (and prunes old delivery
# records) for a site whose workers restart often.
CELERY_BEAT_SCHEDULE = {
    "course-plugins-relay-outbox": {
        "task": "course_plugins.tasks.relay_outbox",
        "schedule": 10.0,
    },
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
if os.environ.get("CELERY_BEAT_MAX_LOOP_INTERVAL"):
    CELERY_BEAT_MAX_LOOP_INTERVAL = float(os.environ["CELERY_BEAT_MAX_LOOP_INTERVAL"])
CELERY_TIMEZONE = TIME_ZONE

try:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    _NO_RETRY = Retry(NoBackoff(), 0)
except ImportError:  # no Redis client: the file cache below
    _NO_RETRY = None
_redis_cache = REDIS_URL or (CELERY_BROKER_URL if CELERY_BROKER_URL.startswith("redis") else "")
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": _redis_cache,
            # Several sites (or test runs) may share one Redis database.
            "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", ""),
            # Every request reads the plugin state stamp here: with Redis down or frozen a
            # request waits half a second at most (no retries), then carries on (sync.py).
            "OPTIONS": {
                "socket_connect_timeout": 0.5,
                "socket_timeout": 0.5,
                "retry": _NO_RETRY,
            },
        }
        if _redis_cache
        else {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    )
}
MIDDLEWARE += ["course_plugins.middleware.SyncMiddleware"]

# --- Example course pages -------------------------------------------------------------------
LOGIN_URL = "admin:login"
if DATABASES["default"]["ENGINE"].endswith("sqlite3") and "pytest" not in sys.modules:
    # Several processes (web, Celery worker) write one SQLite file: take the write lock when a
    # transaction starts, so a read-then-write transaction waits its turn (busy timeout) instead
    # of failing with "database is locked"; WAL lets readers run beside the writer. Not in the
    # pytest process: its test database is in memory, shared between threads, where a lock
    # conflict fails at once instead of waiting, and IMMEDIATE would make every transaction a
    # writer (the multi-process tests run real site processes, which get these options).
    DATABASES["default"]["OPTIONS"].update(
        transaction_mode="IMMEDIATE",
        init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    )

if DATABASES["default"]["ENGINE"].endswith("sqlite3") and "pytest" in sys.modules:
    # The test database is a file, not Django's shared in-memory database: there a lock conflict
    # between two connections (a plugin's async handler works on a worker thread with its own
    # connection) fails at once ("database table is locked") instead of waiting its turn as it
    # does on a real site. WAL lets readers run beside a writer.
    import tempfile

    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"course_plugins_test_{os.getpid()}.sqlite3")
    }
    DATABASES["default"]["OPTIONS"]["init_command"] = "PRAGMA journal_mode=WAL;"

# --- Plugin start-up (course_plugins.site.runtime) ------------------------------------------------
# A process starts its plugins at its first request or Celery task. Under pytest the tests start
# them explicitly (runtime.start() / runtime.activate()), so test order never decides what runs.
COURSE_PLUGINS["AUTOLOAD"] = os.environ.get(
    "COURSE_PLUGINS_AUTOLOAD", "0" if "pytest" in sys.modules else "1"
) == "1"
