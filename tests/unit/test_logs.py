"""Log lines reach the stream whole, so processes sharing it (`nexus up`) never split a line."""

from __future__ import annotations

import json
import subprocess
import sys

# Run in a process of its own: configuring logging is process-wide. Its stderr is a text layer
# over an unbuffered raw file, as Python's own stderr is off a terminal, and every raw write is
# recorded: each is one write(2) that another process's line could fall between.
_SCRIPT = """
import io, json, logging, sys

class Recorded(io.RawIOBase):
    writes = []
    def writable(self):
        return True
    def write(self, data):
        self.writes.append(bytes(data).decode())
        return len(data)

sys.stderr = io.TextIOWrapper(Recorded(), encoding="utf-8", write_through=True)
from nexus_ingest.logs import configure_logging
import structlog

configure_logging("INFO", json=True)
structlog.get_logger("nexus.worker").info("worker.stopped", batches=3)
logging.getLogger("uvicorn.error").info("Shutting down")
print(json.dumps(Recorded.writes))
"""


def test_every_log_line_is_written_whole_in_one_write() -> None:
    """Our events and the standard library's each go out as one write ending in a newline."""
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    writes = json.loads(done.stdout)

    assert all(write.endswith("\n") and write.count("\n") == 1 for write in writes), writes
    assert [json.loads(write)["event"] for write in writes] == ["worker.stopped", "Shutting down"]


_QUIET_SCRIPT = """
import io, logging, sys
sys.stderr = io.StringIO()
from nexus_ingest.logs import configure_logging
import structlog

configure_logging("INFO", json=True)
structlog.get_logger("nexus.worker").info("worker.stopped")
for name in ("httpx2", "httpx", "httpcore", "uvicorn.access"):
    logging.getLogger(name).info("HTTP Request: POST http://127.0.0.1/v1/messages")
print(sys.stderr.getvalue(), file=sys.__stdout__)
"""


def test_the_http_clients_request_lines_stay_below_info() -> None:
    """The LLM SDKs' HTTP clients (httpx, and httpx2 under the current SDKs) log every request
    at INFO; at the default level only Nexus's own line about it is written."""
    result = subprocess.run(
        [sys.executable, "-c", _QUIET_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "worker.stopped" in result.stdout
    assert "HTTP Request" not in result.stdout
