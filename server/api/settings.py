"""The settings of ``fedpers serve`` (pydantic-settings, environment prefix ``FEDPERS_API_``).

Every field can come from the environment (``FEDPERS_API_RUN_DIR``,
``FEDPERS_API_DB_PATH``, ...): that is how the ``--workers N`` processes uvicorn starts
receive the settings of ``fedpers serve``. Host and port belong to uvicorn, not here.

Secrets fail closed: the consent ledger's HMAC key lives in a ``0600`` file beside the
database (``<db>.ledger-key``). Nothing creates it implicitly and there is no default
value; :meth:`ApiSettings.ledger_key` raises :class:`~fedpers.privacy.errors.ConfigError`
when the file is missing, empty or readable by others, and ``fedpers serve`` creates it
explicitly on first start (:func:`create_ledger_key`) with a message saying so.

Example:
    >>> settings = ApiSettings(run_dir=Path("runs/r1"))
    >>> settings.database_path.name
    'api.db'
"""

from __future__ import annotations

import os
import secrets
import stat
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedpers.privacy.errors import ConfigError
from fedpers.server.run_dir import RunDirectory

__all__ = [
    "ENV_PREFIX",
    "LEDGER_KEY_BYTES",
    "ApiSettings",
    "create_ledger_key",
    "ledger_key_path",
    "load_settings",
]

ENV_PREFIX = "FEDPERS_API_"
LEDGER_KEY_BYTES = 32


def ledger_key_path(db_path: Path) -> Path:
    """Where the ledger's HMAC key of the database ``db_path`` lives (beside it, ``0600``)."""
    return db_path.with_name(db_path.name + ".ledger-key")


def create_ledger_key(path: Path) -> bool:
    """Create a random ledger HMAC key file (mode ``0600``) unless one exists.

    Args:
        path: the key file (see :func:`ledger_key_path`).

    Returns:
        Whether a new key was written.
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(LEDGER_KEY_BYTES) + "\n")
    return True


class ApiSettings(BaseSettings):
    """What one ``fedpers serve`` process needs to know.

    Attributes:
        run_dir: the run directory whose model registry is served.
        db_path: the API's SQLite database (default ``RUN_DIR/api.db``).
        max_body_bytes: the largest request body accepted (413 above it).
        rate_limit_per_s: tokens per second of each key's bucket (``0``: no limit).
        rate_limit_burst: the bucket's size (requests a key may send at once).
        reload_interval_s: seconds between model registry polls (``<= 0``: never).
        context_ttl_s: how long a worker keeps a context's learned lifts before reading
            the feedback counters again (``0``: every request reads them).
        demo_tenant: the tenant of the web page's demo key (``--demo``), else ``None``.
        demo_api_key: the demo key itself (a serve-scope key of ``demo_tenant``).
        log_level: the level of the service's logs.
        log_format: ``json`` (one object per line) or ``text``.
        metrics_dir: prometheus_client's multiprocess directory with several workers.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    run_dir: Path
    db_path: Path | None = None
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    rate_limit_per_s: float = Field(default=100.0, ge=0.0)
    rate_limit_burst: int = Field(default=200, ge=1)
    reload_interval_s: float = 2.0
    context_ttl_s: float = Field(default=5.0, ge=0.0, le=3600.0)
    demo_tenant: str | None = None
    demo_api_key: SecretStr | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    metrics_dir: Path | None = None

    @field_validator("demo_tenant")
    @classmethod
    def _tenant_name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("demo_tenant must not be empty")
        return value

    @property
    def database_path(self) -> Path:
        """The database file (``db_path`` or ``RUN_DIR/api.db``)."""
        return self.db_path if self.db_path is not None else RunDirectory(self.run_dir).api_db

    @property
    def ledger_key_file(self) -> Path:
        """The ledger's HMAC key file beside the database."""
        return ledger_key_path(self.database_path)

    def ledger_key(self) -> bytes:
        """The consent ledger's HMAC key; fails closed.

        Raises:
            ConfigError: the key file is missing, empty, or readable by group or others.
        """
        path = self.ledger_key_file
        if not path.is_file():
            raise ConfigError(
                f"{path}: the consent ledger's HMAC key is missing; `fedpers serve` "
                "creates it on first start (never a default key)"
            )
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"{path}: the ledger key is readable by others (mode {mode:o}); "
                f"run `chmod 600 {path}`"
            )
        text = path.read_text(encoding="utf-8").strip()
        try:
            key = bytes.fromhex(text)
        except ValueError:
            raise ConfigError(f"{path}: the ledger key is not hex") from None
        if len(key) < 16:
            raise ConfigError(f"{path}: the ledger key is shorter than 16 bytes")
        return key


@lru_cache(maxsize=1)
def load_settings() -> ApiSettings:
    """The settings from the environment (``FEDPERS_API_*``), read once per process.

    Raises:
        ConfigError: ``FEDPERS_API_RUN_DIR`` is not set or a value is invalid.
    """
    from pydantic import ValidationError

    try:
        return ApiSettings()  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid API settings: {problems}") from None
