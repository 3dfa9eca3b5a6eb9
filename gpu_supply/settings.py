"""Where GPU Supply keeps its data and reads its configuration.

- ``GPU_SUPPLY_DB``: any SQLAlchemy URL; default a SQLite file in the user's data directory.
- ``GPU_SUPPLY_CONFIG``: a TOML file; default ``config.toml`` in the user's config directory.
  It may hold ``[fx]`` rates (units per USD), e.g. ``CNY = 7.1``.
- ``GPU_SUPPLY_PROFILES``: the profile table ``gpu-supply profile`` appends to and ``plan`` reads
  besides the shipped one; default ``profiles.csv`` in the user's data directory.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from gpu_supply.errors import UserError

APP_NAME = "gpu-supply"


def database_url() -> str:
    url = os.environ.get("GPU_SUPPLY_DB", "").strip()
    if url:
        return url
    from platformdirs import user_data_dir

    directory = Path(user_data_dir(APP_NAME, appauthor=False))
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'gpu-supply.db'}"


def profiles_path() -> Path:
    explicit = os.environ.get("GPU_SUPPLY_PROFILES", "").strip()
    if explicit:
        return Path(explicit)
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False)) / "profiles.csv"


def config_path() -> Path:
    explicit = os.environ.get("GPU_SUPPLY_CONFIG", "").strip()
    if explicit:
        return Path(explicit)
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


def load_config() -> dict:
    path = config_path()
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError("config", f"{path} is not valid TOML: {exc}", "fix the file or unset GPU_SUPPLY_CONFIG") from exc
