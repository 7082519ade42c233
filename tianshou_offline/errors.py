"""User-facing errors: bad input (a missing or corrupt file, an unknown task, no network) is
reported as ONE clear line on stderr and exit code 2, never as a traceback. Raise
``UserInputError`` and wrap a script's ``main`` with ``run_main``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2


class UserInputError(Exception):
    """Bad input from the user; ``run_main`` prints it as one line and exits with code 2."""


def run_main(main: Callable[[], object]) -> None:
    """Run a script's ``main`` and turn ``UserInputError`` into one line and exit code 2."""
    try:
        main()
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
