"""A live table of component installs for the terminal (the DAG installer's sink)."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar


class LiveTable:
    """Rows per node: status and elapsed time, redrawn as the installer reports."""

    _STYLE: ClassVar[dict[str, str]] = {
        "waiting": "dim",
        "running": "yellow",
        "installed": "green",
        "upgraded": "green",
        "unchanged": "green",
        "created": "green",
        "applied": "green",
        "removed": "green",
        "failed": "red",
        "not started": "dim",
    }

    def __init__(self, title: str) -> None:
        from rich.live import Live

        from kubelab.cli.common import console

        self.title = title
        self.rows: dict[str, tuple[str, str, float]] = {}
        self._lock = threading.Lock()
        self.live = Live(self._render(), console=console(stderr=True), refresh_per_second=4)

    def _render(self) -> Any:
        from rich.table import Table

        table = Table(title=self.title, box=None, pad_edge=False, title_justify="left")
        for column in ("COMPONENT", "STATUS", "TIME", "DETAIL"):
            table.add_column(column)
        now = time.monotonic()
        for name, (status, detail, started) in self.rows.items():
            style = self._STYLE.get(status, "")
            elapsed = f"{now - started:.0f}s" if status == "running" else ""
            table.add_row(name, f"[{style}]{status}[/]", elapsed, detail)
        return table

    def update(self, name: str, status: str, detail: str = "") -> None:
        with self._lock:
            started = self.rows.get(name, ("", "", time.monotonic()))[2]
            if status == "running":
                started = time.monotonic()
            self.rows[name] = (status, detail, started)
            self.live.update(self._render())

    def __enter__(self) -> LiveTable:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)
