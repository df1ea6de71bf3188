"""Files that ship with the service (the face detector, the ICT head), read only if they are the files
the code was calibrated with."""

from __future__ import annotations

import hashlib
from pathlib import Path


def read_verified(path: Path, sha256: str, error: type[Exception], what: str, home: str) -> bytes:
    """The bytes of ``path``; ``error`` when it is missing or its sha256 is not ``sha256``. ``what`` names
    the file in the message and ``home`` says where it ships from."""
    try:
        data = Path(path).read_bytes()
    except OSError as reason:
        raise error(f"{what} {path} cannot be read ({reason.strerror}); "
                    f"it ships with the service under {home}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise error(f"{what} {path} is altered or corrupt: sha256 {digest[:12]}…, expected {sha256[:12]}… "
                    "(restore it from the repository)")
    return data
