"""``python -m training.photos --photos DIR --out FILE.npz [--limit N]``: dlib landmarks for a photo folder."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .landmarked import detect_landmarks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.photos")
    parser.add_argument("--photos", type=Path, default=Path("../shared/data/utkface-aligned-200"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, help="look at the first N photos (sorted by name)")
    parser.add_argument("--min-face-px", type=int, default=60)
    args = parser.parse_args(argv)
    names, landmarks = detect_landmarks(args.photos, args.limit, args.min_face_px)
    provenance = {"photos": str(args.photos), "looked_at": args.limit, "kept": len(names), "landmarks": "dlib 68-point",
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, names=np.array(names), landmarks=landmarks, provenance=json.dumps(provenance))
    print(f"{len(names)} photos with landmarks -> {args.out}")


if __name__ == "__main__":
    main()
