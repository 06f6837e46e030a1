"""`python -m chestx.web.db upgrade|current`: apply or show the migrations of the database the
app would use (DATABASE_URL, or chestx.db in the instance folder)."""

from __future__ import annotations

import argparse
import sys

from chestx.errors import ChestXError
from chestx.web.db import Database, current_revision, default_url


def main(argv: list[str] | None = None) -> int:
    import os

    from chestx.web import ROOT

    parser = argparse.ArgumentParser(prog="python -m chestx.web.db")
    parser.add_argument("command", choices=["upgrade", "current"])
    args = parser.parse_args(argv)
    url = os.environ.get("DATABASE_URL", "").strip() or default_url(ROOT / "instance")
    try:
        db = Database(url)
        if args.command == "upgrade":
            db.upgrade()
        print(f"{db.safe_url}: revision {current_revision(db.engine) or 'none'}")
    except ChestXError as error:
        print(f"chestx.web.db: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
