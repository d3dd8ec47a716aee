"""Running the command-line tools as a user does: a subprocess per command."""

import os
import subprocess
import sys


def qute(*args, cwd=None, env=None, module="qute", timeout=900):
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
    )


def assert_user_error(proc, *fragments):
    """Exit status 2, one line on stderr naming each fragment, no traceback."""
    assert proc.returncode == 2, proc.stderr + proc.stdout
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1, err
    for f in fragments:
        assert f in err, err
