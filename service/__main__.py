"""``python -m service [--model-store DIR] [--host H] [--port P]``; every setting also reads FACERECON_*."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from service.model_store import ModelStoreError, find_model_store, load_model_store
from service.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--model-store", help="model-store root (FACERECON_MODEL_STORE)")
    parser.add_argument("--model-name", help="model under the root (FACERECON_MODEL_NAME)")
    parser.add_argument("--model-version", help="version, default the highest (FACERECON_MODEL_VERSION)")
    parser.add_argument("--host", help="bind address (FACERECON_HOST)")
    parser.add_argument("--port", type=int, help="port (FACERECON_PORT)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    settings = Settings(**overrides)
    try:
        # Fail at start-up, with the reason, rather than serve a never-ready process.
        load_model_store(find_model_store(settings.model_store, settings.model_name, settings.model_version))
    except ModelStoreError as error:
        print(f"cannot serve: {error}", file=sys.stderr)
        return 2

    from service.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
