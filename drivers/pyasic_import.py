"""Loading pyasic without letting it configure the process (see :func:`import_pyasic`).

Its own module so that every driver module can load pyasic lazily without importing the
backend table (drivers/pyasic_backends.py), which itself builds on them.
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from types import ModuleType

# Loggers pyasic's import reconfigures: the root (basicConfig + level) and asyncssh's level.
_LOGGERS_PYASIC_TOUCHES = ("", "asyncssh")


def import_pyasic() -> ModuleType:
    """Import pyasic without letting it configure logging for the whole process.

    pyasic 0.79.0 calls ``logging.basicConfig`` and sets the root level when imported, which
    would put its own handler and format on every log line of the daemon. The handlers and
    levels of the loggers it touches are put back as they were. Its pydantic v1-style models
    (and passlib's use of ``crypt``) warn at import; those warnings are about pyasic's code,
    not ours, and are dropped here.
    """
    if "pyasic" in sys.modules:
        return sys.modules["pyasic"]
    from pydantic.warnings import PydanticDeprecationWarning

    saved = {name: _logger_state(logging.getLogger(name)) for name in _LOGGERS_PYASIC_TOUCHES}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PydanticDeprecationWarning)
            # passlib, imported for the Whatsminer login, imports the stdlib crypt module.
            warnings.filterwarnings("ignore", "'crypt' is deprecated", DeprecationWarning)
            return importlib.import_module("pyasic")
    finally:
        for name, (handlers, level) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.setLevel(level)


def _logger_state(logger: logging.Logger) -> tuple[list[logging.Handler], int]:
    return list(logger.handlers), logger.level
