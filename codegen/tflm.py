"""TFLite Micro's interpreter in a child process, where a crash cannot take the caller down.

TFLM's C++ interpreter believes what a ``.tflite`` file says: an index or a shape it does not
expect is a segfault or an abort, not an error. ``codegen.validate`` refuses the malformed models
we know of before TFLM sees them; whatever still crashes TFLM does so in a child, and the caller
gets one ``TFLMCrash`` (a CodegenError: exit 2 in both CLIs) naming the signal.

``run(fn, *args)`` calls ``fn`` in a process forked for that call from a small server: a Python
started once per caller process (``python -c``, so nothing of the caller's ``__main__`` is re-run,
unlike multiprocessing's spawn and forkserver), single-threaded (never a fork of a process running
TensorFlow's threads), that has imported numpy and the TFLM runtime. A call costs a fork and a
round trip, not a Python start-up: 6-7 ms on top of the work, measured with the default model
and the MLPerf Tiny models (the first call also starts the server, ~0.1 s). codegen.report's arena probe and qute.oracle's
reference runs both go through it.

Wire format, both ways: 8-byte little-endian length, then a pickle. Caller -> server: (sys.path,
fn, args). Server -> caller: ("pid", pid) after the fork, the child's ("ok", value) or ("raise",
exception) if it got that far, then ("exit", wait status) once the child is gone.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from codegen.ir import CodegenError

_PRELOAD = ["numpy", "tflite_micro.python.tflite_micro.runtime"]
_lock = threading.Lock()
_server: dict = {}  # "proc", "pid" (of the process that started it), "buf"


class TFLMCrash(CodegenError):
    """The TFLM interpreter died from a signal, or did not finish, on a model."""


def preload(*modules: str) -> None:
    """Modules the server imports once for all children (effective before the first `run`)."""
    for m in modules:
        if m not in _PRELOAD:
            _PRELOAD.append(m)


# --------------------------------------------------------------------------- caller side

def _start():
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.Popen([sys.executable, "-c", "from codegen.tflm import _serve; _serve()", *_PRELOAD],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
    _server.update(proc=proc, pid=os.getpid(), buf=b"")
    return proc


def _stop() -> None:
    proc = _server.pop("proc", None)
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(proc, deadline: float | None):
    """The next message from the server; None at the deadline; EOFError if the server is gone."""
    fd = proc.stdout.fileno()
    while True:
        buf = _server["buf"]
        if len(buf) >= 8:
            (n,) = struct.unpack("<Q", buf[:8])
            if len(buf) >= 8 + n:
                _server["buf"] = buf[8 + n :]
                return pickle.loads(buf[8 : 8 + n])
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise EOFError("the TFLM server exited")
            _server["buf"] += chunk


def run(fn, *args, doing: str = "running it", timeout: float = 300.0, who: str = "TFLite Micro"):
    """fn(*args) in a child process; its result, or its exception re-raised here.

    `fn` must be importable by name (a module-level function). A child killed by a signal, or
    still running after `timeout` seconds (then killed), raises TFLMCrash; `who` and `doing` say
    what the child was running and doing, for that message.
    """
    with _lock:
        proc = _server.get("proc")
        if proc is None or proc.poll() is not None or _server.get("pid") != os.getpid():
            proc = _start()
        # the call travels pickled inside the request, so the child unpickles it (importing
        # fn's module) only once it has the caller's sys.path
        request = (list(sys.path), pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL))
        try:
            _send(proc.stdin, request)
        except (BrokenPipeError, OSError):
            proc = _start()
            _send(proc.stdin, request)
        deadline = time.monotonic() + timeout
        result = child = None
        timed_out = False

        def kill_child():
            if child is not None:
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass

        try:
            while True:
                message = _receive(proc, None if timed_out else deadline)
                if message is None:  # the deadline: kill the child, then hear its exit as usual
                    timed_out = True
                    kill_child()
                    continue
                kind, value = message
                if kind == "pid":
                    child = value
                    if timed_out:
                        kill_child()
                elif kind == "exit":
                    status = value
                    break
                else:
                    result = message
        except EOFError:
            _stop()
            raise TFLMCrash(f"the process running {who} died while {doing}") from None
        except BaseException:  # interrupted here: leave no child or server half-way through a call
            kill_child()
            _stop()
            raise
    if timed_out:
        raise TFLMCrash(f"{who} did not finish within {timeout:.0f} s while {doing}; "
                        f"the model passed qute's checks but {who} cannot run it")
    if result is None:
        how = (signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status)
               else f"exit status {os.WEXITSTATUS(status)}")
        raise TFLMCrash(f"{who} crashed on this model ({how}) while {doing}; "
                        f"the model passed qute's checks but {who} cannot run it")
    kind, value = result
    if kind == "raise":
        raise value
    return value


# --------------------------------------------------------------------------- server side

def _serve() -> None:
    """The server's loop (started by `_start`): one fork per request, requests one at a time."""
    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the interpreter prints must not reach the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle (it stops us)
    for m in sys.argv[1:]:
        try:
            __import__(m)
        except ImportError:
            pass
    stdin = sys.stdin.buffer
    while True:
        head = stdin.read(8)
        if len(head) < 8:
            return
        (n,) = struct.unpack("<Q", head)
        request = stdin.read(n)
        if len(request) < n:
            return
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _child(proto, request)
            except BaseException:  # noqa: BLE001 - nothing here may return into the server's loop
                code = 70
            finally:
                os._exit(code)
        _send(proto, ("pid", pid))
        _, status = os.waitpid(pid, 0)
        _send(proto, ("exit", status))


def _child(proto, request: bytes) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        path, call = pickle.loads(request)
        sys.path[:] = path
        fn, args = pickle.loads(call)
        result = ("ok", fn(*args))
    except BaseException as e:  # noqa: BLE001 - handed to the caller, which decides
        result = ("raise", e)
    try:
        data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)  # what the caller could not unpickle must not be sent either
    except Exception:  # an unpicklable value or exception: its text still travels
        data = pickle.dumps(("raise", RuntimeError(f"{type(result[1]).__name__}: {result[1]}")))
    proto.write(struct.pack("<Q", len(data)) + data)
    proto.flush()


def print_allocations(tflite: bytes) -> str:
    """What TFLM's recording allocator prints for the model (in the child: C++ output on fd 2)."""
    from tflite_micro.python.tflite_micro import runtime

    ip = runtime.Interpreter.from_bytes(bytes(tflite))
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        try:
            os.dup2(tmp.fileno(), 2)
            ip.print_allocations()  # C++ output: capture the file descriptor, not sys.stderr
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        return tmp.read().decode(errors="replace")
