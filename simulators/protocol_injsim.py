"""pyserial's handler of ``injsim://`` URLs (see :mod:`simulators.injsim`, which registers it).

pyserial finds it as ``<package>.protocol_injsim`` for each package in
``serial.protocol_handler_packages``, as it finds its own ``protocol_loop`` and ``protocol_spy``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

from simulators import injsim
from simulators.injector_faults import InjectorSimError
from simulators.serial_port import InProcessPort

if TYPE_CHECKING:
    from typing_extensions import Buffer


class Serial(SerialBase):
    """A serial port whose other end is an in-process simulated injector."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._line: InProcessPort | None = None
        super().__init__(*args, **kwargs)

    def open(self) -> None:
        if self.is_open:
            raise SerialException("Port is already open.")
        if self.port is None:
            raise SerialException("Port must be configured before it can be used.")
        url = str(self.port)
        name = url.split("://", 1)[-1].split("?", 1)[0]
        try:
            self._line = injsim.simulator(url).open_in_process(name)
        except (InjectorSimError, ValueError) as exc:
            raise SerialException(f"cannot open {url}: {exc}") from exc
        self.is_open = True

    def close(self) -> None:
        line, self._line = self._line, None
        if line is not None:
            line.close()
        self.is_open = False

    def _reconfigure_port(self, force_update: bool = False) -> None:
        """Nothing to configure: an in-process line has no baud rate."""

    def _open_line(self) -> InProcessPort:
        if self._line is None:
            raise PortNotOpenError()
        return self._line

    @property
    def in_waiting(self) -> int:
        return self._open_line().in_waiting()

    def read(self, size: int = 1) -> bytes:
        return self._open_line().read(size, self.timeout)

    def write(self, data: Buffer) -> int:
        return self._open_line().write(bytes(data))

    def reset_input_buffer(self) -> None:
        self._open_line().reset_input()

    def reset_output_buffer(self) -> None:
        """Writes are handed over at once: nothing waits to be sent."""

    def _update_break_state(self) -> None:
        pass

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True
