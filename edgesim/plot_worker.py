"""`python -m edgesim.plot_worker`: the compile's plotting process (`report_plots.PlotProcess`).

It imports the plotting stack at once, while a reader thread takes the jobs (one JSON line
each) off stdin so the compile never waits on a full pipe; it draws each job in order and
exits 0 at end of input. A failed job prints its traceback on stderr and exits 1.
"""

from __future__ import annotations

import json
import queue
import sys
import threading


def _read(lines: queue.Queue[str | None]) -> None:
    for line in sys.stdin:
        lines.put(line)
    lines.put(None)


def main() -> int:
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_read, args=(lines,), daemon=True).start()
    from edgesim.cli import collection_paused

    with collection_paused():
        import edgesim.plot  # noqa: F401 - matplotlib's imports, before the first job arrives
    from edgesim.report_plots import draw

    while (line := lines.get()) is not None:
        if line.strip():
            draw(json.loads(line))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the compile reports it
        raise SystemExit(130) from None
