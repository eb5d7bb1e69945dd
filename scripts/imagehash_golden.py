#!/usr/bin/env python3
"""Writes Python imagehash's 64-bit pHash of every photo in a folder as CSV (filename,phash).

relist's pHash must agree with imagehash.phash; the values are derived from the evaluation
photos, so they are generated where the photos are (../shared/data) instead of committed:
    python3 scripts/imagehash_golden.py ../shared/data/photos-dev target/imagehash-photos-dev.csv
"""
import os
import sys

import imagehash
from PIL import Image


def main() -> None:
    photos, out = sys.argv[1], sys.argv[2]
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    rows = []
    for name in sorted(os.listdir(photos)):
        with Image.open(os.path.join(photos, name)) as img:
            rows.append(f"{name},{imagehash.phash(img)}")
    tmp = out + ".part"
    with open(tmp, "w") as f:
        f.write("filename,phash\n" + "\n".join(rows) + "\n")
    os.replace(tmp, out)
    print(f"{len(rows)} imagehash values written to {out}")


if __name__ == "__main__":
    main()
