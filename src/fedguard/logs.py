"""Logging set-up for the ``fedguard`` command.

Library modules only call ``logging.getLogger(__name__)``; this module decides where
records go when fedguard runs as a program. Keys, ciphertexts, plaintext updates and
credentials are never passed to a logger anywhere in fedguard.
"""

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(verbosity: int = 0, *, quiet: bool = False) -> None:
    """Send ``fedguard`` log records to standard error.

    ``verbosity`` 0 shows lifecycle events (INFO), 1 or more adds protocol stages
    (DEBUG); ``quiet`` keeps only warnings and errors.
    """
    level = logging.INFO
    if quiet:
        level = logging.WARNING
    elif verbosity > 0:
        level = logging.DEBUG

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))

    root = logging.getLogger("fedguard")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
