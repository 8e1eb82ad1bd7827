"""Run the app on uvicorn: bind, say where, serve until Ctrl-C or SIGTERM, drain, exit 0.

The socket is bound here, before uvicorn starts, so a port in use or an
address that is not this machine's is a one-line error. uvicorn re-raises a
caught signal once it has shut down (its process then dies of it); a server
that drained every request on request has done its job, so imgcls handles
the signals itself and returns normally. A second Ctrl-C ends the process at
once (exit code 130).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import signal
import socket
import sys

from imgcls.errors import ImgclsError

LOOPBACK = ("127.0.0.1", "::1", "localhost")
DRAIN_SECONDS = 30  # in-flight requests get this long after Ctrl-C / SIGTERM


def bind(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the model loads so a port in use is said at once; uvicorn listens on it."""
    family = socket.AF_INET6 if _is_ipv6(host) else socket.AF_INET
    # proto named: asyncio turns Nagle's algorithm off only on sockets that say TCP, and with it on a keep-alive
    # client waited 40 ms (a delayed ACK) for every answer, whose headers and body are two writes
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise _in_use(host, port) from None
        raise ImgclsError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); give an address of this machine "
                          "with --host (127.0.0.1 for this machine only)") from None
    return sock  # not listening yet: until the model is warm, a client is refused at once rather than left waiting


def _in_use(host: str, port: int) -> ImgclsError:
    return ImgclsError(f"port {port} on {host} is in use (another server?): pick another with --port")


def _is_ipv6(host: str) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).version == 6
    return False


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


def serve(app, sock: socket.socket, announce=lambda: None) -> None:
    """Serve `app` on a bound socket until Ctrl-C or SIGTERM; in-flight requests are answered first.

    `announce()` prints the start line once the socket listens, so a client that waits for the line is never refused.
    """
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            def drain(sig, frame):
                if self.should_exit and sig == signal.SIGINT:  # a second Ctrl-C: the user wants out now
                    sys.stderr.write("stopped at once: requests in flight were dropped\n")
                    sys.stderr.flush()
                    os._exit(130)  # not a slower, half-done exit: the model thread may be mid-batch
                self.should_exit = True

            previous = {sig: signal.signal(sig, drain) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        async def shutdown(self, sockets=None):
            in_flight = len(self.server_state.tasks)
            logging.getLogger("imgcls.serve").info(
                f"stopping: answering {_requests(in_flight)} in flight first (up to {DRAIN_SECONDS} s); "
                "Ctrl-C again stops at once" if in_flight else "stopping")
            await super().shutdown(sockets)

    try:
        sock.listen(2048)  # two servers that bound one port while loading: the second learns it here
    except OSError as exc:
        raise _in_use(*sock.getsockname()[:2]) if exc.errno == errno.EADDRINUSE else ImgclsError(
            f"cannot listen ({exc.strerror or exc})") from None
    announce()
    _log_to_stderr()
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=DRAIN_SECONDS,
                            lifespan="on", server_header=False)
    Server(config).run(sockets=[sock])


def _requests(count: int) -> str:
    return f"{count} request" + ("" if count == 1 else "s")


def _log_to_stderr() -> None:
    """imgcls.serve's own lines (a failed batch, a stop) on stderr, once."""
    logger = logging.getLogger("imgcls.serve")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
