"""Hide TensorFlow's native start-up log lines from a command-line run.

TensorFlow writes "All log messages before absl::InitializeLog() is called are written to STDERR" and the
oneDNN notice straight to file descriptor 2 from C++, before ``TF_CPP_MIN_LOG_LEVEL`` takes effect. For the CLI
(unless ``--verbose``) descriptor 2 becomes a pipe read by a thread that drops those lines and passes every
other line on; Python's own ``sys.stderr`` keeps writing to the terminal directly.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

#: native lines that say nothing to a user: absl's pre-initialisation notice, TensorFlow's INFO lines (the
#: oneDNN notice, the CPU-feature notice and its second line)
NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\)|I0000 |[IW]\d{4} \d\d:\d\d:\d\d"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags)"
)


def filter_native_stderr() -> None:
    """Route file descriptor 2 through a filter that drops TensorFlow's start-up noise (idempotent)."""
    if getattr(filter_native_stderr, "active", False):
        return
    try:
        sys.stderr.flush()
        real = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
    except OSError:  # no real descriptor 2 (embedded interpreters): leave everything as it is
        return
    sys.stderr = open(real, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives as long as the process

    def pump() -> None:
        with os.fdopen(read, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not NOISE.match(line):
                        os.write(real, line + b"\n")
            if pending and not NOISE.match(pending):
                os.write(real, pending)

    thread = threading.Thread(target=pump, name="xconv-stderr-filter", daemon=True)
    thread.start()

    def finish() -> None:  # close the pipe's last writer so the pump drains and stops
        os.dup2(real, 2)
        thread.join(timeout=2)

    atexit.register(finish)
    filter_native_stderr.active = True  # type: ignore[attr-defined]
