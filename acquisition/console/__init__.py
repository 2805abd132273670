"""The technologists' web console: the exam, the injector and the doses on one page.

:class:`ConsoleBackend` is the view and the commands without HTTP; :class:`ConsoleServer`
serves it on loopback (docs/console.md).
"""

from acquisition.console.backend import ConsoleBackend
from acquisition.console.server import ConsoleServer

__all__ = ["ConsoleBackend", "ConsoleServer"]
