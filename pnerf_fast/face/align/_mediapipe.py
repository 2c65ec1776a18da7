"""MediaPipe plumbing shared by detection and segmentation: quiet logs, captured native stderr."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile


def _quiet_mediapipe():
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _native_stderr_captured():
    """MediaPipe's C++ side (TFLite, absl) prints benign warnings straight to file
    descriptor 2. Capture them; if the block fails they are re-emitted so nothing that
    explains an error is lost. Set PNERF_MEDIAPIPE_VERBOSE=1 to see them always."""
    if os.environ.get("PNERF_MEDIAPIPE_VERBOSE"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (some embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if not ok:
                tmp.seek(0)
                text = tmp.read().decode("utf-8", "replace")
                if text:
                    sys.stderr.write(text)
