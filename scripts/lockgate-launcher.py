"""The ``lockgate`` command of the app environment: runs the CLI of the checkout it was called through.

The environment lives in a cache shared by every clone (keyed by the lock file), so it must not
hold one clone's code: an editable install would point every clone at the checkout that ran
setup last. ``<checkout>/.venv`` is a link into that cache, and the path the command was called
by (``<checkout>/.venv/bin/lockgate``, unresolved) names the checkout; scripts/setup.sh copies
this file there with the environment's Python on its first line.
"""

import os
import sys
from pathlib import Path


def checkout() -> Path:
    called = Path(os.path.abspath(sys.argv[0]))  # abspath keeps the .venv link; resolve() would follow it
    for candidate in (called.parent.parent.parent, os.environ.get("LOCKGATE_PROJECT_ROOT")):
        if candidate and (Path(candidate) / "flows" / "__main__.py").is_file():
            return Path(candidate)
    sys.exit(
        f"lockgate: {called} is not inside a Lockgate checkout; run <checkout>/.venv/bin/lockgate "
        "or set LOCKGATE_PROJECT_ROOT to the checkout"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(checkout()))
    from flows.cli import main

    sys.exit(main())
