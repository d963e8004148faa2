"""What a worker's ORM set-up imports (app/db.tortoise_config)."""

from __future__ import annotations

import subprocess
import sys

WORKER_INIT = """
import asyncio, sys
from tortoise import Tortoise
from app.db import tortoise_config
from app.settings import load_settings

async def main():
    settings = load_settings(env_file=None, DATABASE_URL=sys.argv[1])
    await Tortoise.init(config=tortoise_config(settings))
    await Tortoise.close_connections()

asyncio.run(main())
print(sorted(m for m in sys.modules if m.split(".")[0] in ("aerich", "dictdiffer", "numpy")))
"""


def test_serving_never_imports_aerich(database_url: str) -> None:
    """aerich's model is only for migrating: importing it brings dictdiffer, which loads numpy
    when installed (the bench extra), 15 MB of RSS per worker."""
    result = subprocess.run(
        [sys.executable, "-c", WORKER_INIT, database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_migrating_still_knows_aerichs_model() -> None:
    from app.db import tortoise_config
    from app.settings import load_settings

    settings = load_settings(env_file=None, DATABASE_URL="postgres://u@h/db")
    assert tortoise_config(settings, pool=False)["apps"]["models"]["models"] == [
        "models",
        "aerich.models",
    ]
