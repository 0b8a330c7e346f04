"""What the fixtures of a service started by deploy/local let a test do with it: stop it (an
outage), start it again, make sure it runs. A service given by the environment cannot be."""

from __future__ import annotations

from typing import Any


class LocalControl:
    """Mixin of a service fixture's object with ``server`` (the launcher's, None when the
    service came from the environment), ``source`` and ``what`` (its name in messages)."""

    server: Any
    source: str
    what: str = "service"

    @property
    def controllable(self) -> bool:
        return self.server is not None

    def _need_server(self) -> Any:
        if self.server is None:
            raise RuntimeError(f"the {self.what} from {self.source} cannot be stopped by tests")
        return self.server

    def stop(self, kill: bool = False) -> None:
        """Stop the local server (connections refused until start()); kill=True: SIGKILL."""
        self._need_server().stop(kill=kill)

    def start(self) -> None:
        """Start the local server again on the same port."""
        self._need_server().start()

    def ensure_running(self) -> None:
        if self.server is not None and not self.server.running():
            self.server.start()
