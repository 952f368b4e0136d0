"""One side of the conversation between the host and a plugin worker: nested request/reply.

Each side sends ``{"q": request}`` and waits for ``{"r": value}`` or ``{"e": error}``; while it
waits, requests from the other side are served in the waiting thread (the worker's hook function
calls ``api.storage.get_sync``; the host's around-advice ``orig`` runs a hook of the same plugin),
so calls nest to any depth and always unwind in order. The host bounds every wait with a
deadline. Platform API calls the worker makes count against it (as in trusted mode, where the
budget covers everything the plugin does); the time the host spends in a function of its own that
the plugin called back (around advice's ``orig``) does not.

The host writes its messages with ``Wire.pack`` (``marshal``: the worker trusts the host), the
worker with JSON (``Wire.loads`` bounds what the host decodes). A call whose result is one of its
own positional arguments, unchanged, is answered ``{"s": index}`` ("the same as argument
``index``") instead of sending the value back: a filter that lets the data through costs no
encoding of it in the worker and no decoding in the host, and the caller gets its own object
back, as it would from the same function run in-process.

Errors cross as their type name, message and traceback text and are raised again on the other
side as the same class when it is one both sides know (built-in exceptions, ``course_plugins``
errors, ``SecurityViolation``), else as ``IsolatedPluginError``. A ``ValueError`` stays a
``ValueError`` (a veto); an error that came from the other side and was not handled goes back as
the very object it was.
"""

from __future__ import annotations

import builtins
import itertools
import os
import struct
import time
import traceback
from collections.abc import Callable
from typing import Any

from course_plugins import exceptions as errors_module
from course_plugins.core.isolation.wire import (
    MAX_FRAME,
    ChannelClosed,
    DecodeTimeout,
    Wire,
    WireError,
)
from course_plugins.core.sandbox import errors as sandbox_errors
from course_plugins.exceptions import CoursePluginsError, PluginError

_MAX_TEXT = 8000

#: Platform API calls that keep the functions they are given (the others use them once).
REGISTERING = frozenset({"hooks.add", "events.subscribe", "advice.add", "schedule"})
#: Platform API calls whose result the plugin does not need: the worker sends them one-way
#: (``{"n": request}``, no reply awaited). The channel keeps order, so the host has done each one
#: before it reads the reply that ends the call, and before any later request of the worker; an
#: error is written to the plugin's log instead of being raised in the plugin.
#: (``analytics.track_event`` and ``notify.*`` are not among them: their infrastructure errors
#: must reach the handler, so that a background event is delivered again.)
ONE_WAY = frozenset({"log", "emit"})
_CHUNK = 1 << 20
#: Errors of the other side kept within one request to name them back (see ``Endpoint``).
_MAX_GOT_ERRORS = 64
_HEADER = struct.Struct(">I")


class Same:
    """The result of a call that returned its positional argument ``index`` unchanged (what a
    worker's ``handler`` returns to have ``{"s": index}`` sent instead of the value)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


class IsolatedPluginError(CoursePluginsError):
    """An isolated plugin's code raised an exception this side has no class for.

    ``type_name`` is the class name it had in the worker; ``remote_traceback`` its traceback.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        self.type_name = type_name
        self.remote_traceback = remote_traceback
        super().__init__(f"{type_name}: {message}" if message else type_name)


class WorkerTimeout(CoursePluginsError, TimeoutError):
    """The worker did not answer within the call's budget (it is killed and replaced)."""


class WorkerCrashed(CoursePluginsError):
    """The worker process ended (or broke the protocol) in the middle of a call."""


#: Built-in exceptions the other side's errors never become: raised from the thread an async
#: proxy awaits, a ``StopIteration`` cannot be set on the awaited future (asyncio refuses it
#: in a callback), and the hook run waited for ever; in a generator it ends the iteration.
_NEVER_REBUILT = frozenset({"StopIteration", "StopAsyncIteration"})


def _exception_classes() -> dict[str, type[BaseException]]:
    known: dict[str, type[BaseException]] = {}
    for module in (builtins, errors_module, sandbox_errors):
        for name, value in vars(module).items():
            if (isinstance(value, type) and issubclass(value, Exception)
                    and name not in _NEVER_REBUILT):
                known.setdefault(name, value)
    known["IsolatedPluginError"] = IsolatedPluginError
    return known


_KNOWN: dict[str, type[BaseException]] | None = None


def describe_error(
    exc: BaseException, token: int | None = None, *, traceback_text: bool = True
) -> dict[str, Any]:
    """Plain data about ``exc`` for the other side (see ``rebuild_error``); the traceback only
    with ``traceback_text`` (the host keeps its own from the worker)."""
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable error>"
    data: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": message[:_MAX_TEXT],
        "veto": isinstance(exc, ValueError) and not isinstance(exc, WireError),
        "tb": "".join(traceback.format_exception(exc))[-_MAX_TEXT:] if traceback_text else "",
    }
    if isinstance(exc, IsolatedPluginError):
        data["type"] = exc.type_name
        data["message"] = str(exc).partition(": ")[2]
    if token is not None:
        data["token"] = token
    args = getattr(exc, "args", ())
    if all(type(a) in (str, int, float, bool, type(None)) for a in args):
        data["args"] = [a[:_MAX_TEXT] if isinstance(a, str) else a for a in args]
    for attr in ("plugin", "message", "reason", "filename", "lineno", "errors"):
        value = getattr(exc, attr, None)
        if type(value) in (str, int) or (
            type(value) is dict and all(type(k) is str and type(v) is str for k, v in value.items())
        ):
            data.setdefault("attrs", {})[attr] = value
    return data


def rebuild_error(data: Any, owner: str | None = None) -> BaseException:
    """Make an exception like the one ``describe_error`` described (never trusting its content
    beyond picking one of a fixed set of classes and giving it text). ``owner``: the plugin the
    other side runs, named by the error whatever the other side said (a worker cannot blame
    another plugin)."""
    global _KNOWN
    if _KNOWN is None:
        _KNOWN = _exception_classes()
    if type(data) is not dict:
        return WorkerCrashed("the other side sent a malformed error")
    type_name = str(data.get("type", "Exception"))[:200]
    message = str(data.get("message", ""))[:_MAX_TEXT]
    tb = str(data.get("tb", ""))[:_MAX_TEXT]
    attrs: dict[str, Any] = data["attrs"] if type(data.get("attrs")) is dict else {}
    if owner is not None:
        attrs = {**attrs, "plugin": owner}
    cls: Any = _KNOWN.get(type_name)
    exc: BaseException | None = None
    if cls is not None:
        try:
            if issubclass(cls, PluginError):
                errors = attrs.get("errors")
                if errors is not None and "errors" in cls.__init__.__code__.co_varnames:
                    exc = cls(attrs.get("plugin"), errors)
                else:
                    exc = cls(attrs.get("plugin"), str(attrs.get("message", message)))
            elif type_name == "SecurityViolation":
                exc = cls(
                    str(attrs.get("reason", message)),
                    attrs.get("filename"),
                    attrs.get("lineno"),
                    plugin=attrs.get("plugin"),
                )
            elif cls.__module__ == "builtins":
                args = data.get("args")
                exc = cls(*args) if type(args) is list else cls(message)
        except Exception:
            exc = None
    if exc is None:
        exc = (ValueError(message) if data.get("veto") and cls is None
               else IsolatedPluginError(type_name, message, tb))
    exc.remote_traceback = tb  # type: ignore[attr-defined]
    if tb:
        exc.add_note(f"In the isolated plugin's worker:\n{tb.rstrip()}")
    return exc


Handler = Callable[[Any], Any]


class Endpoint:
    """Nested request/reply over one file descriptor.

    ``handler(request)`` serves the other side's requests (its return value is the reply; an
    exception becomes an error reply). ``wire`` encodes and decodes values.
    """

    def __init__(self, fd: int, wire: Wire, handler: Handler, *, limit: int = MAX_FRAME,
                 send_tracebacks: bool = True,
                 uncharged: Callable[[Any], bool] | None = None,
                 one_way_failed: Callable[[Any, BaseException], None] | None = None,
                 owner: str | None = None, packs: bool = False,
                 unpacks: bool = False) -> None:
        self.fd = fd
        # ``packs``: this side writes ``Wire.pack`` messages (the host: its worker trusts it);
        # ``unpacks``: this side reads them (the worker, from the host). Else JSON both ways.
        self._encode = wire.pack if packs else wire.dumps
        self.unpacks = unpacks
        # The plugin the other side runs (host side): the errors it sends name this plugin.
        self.owner = owner
        # Set by ``close()``: calls still waiting further up the stack (a nested call killed
        # the other side) fail at once instead of using a descriptor number that another
        # thread may have been given again meanwhile.
        self.closed = False
        # Called with a one-way request of the other side and the error serving it raised.
        self.one_way_failed = one_way_failed
        # ``uncharged(request)``: whether serving that request of the other side does not count
        # against the deadline of the call waiting for it.
        self.uncharged = uncharged
        # While a charged request of the other side is served: the deadline of the call that
        # waits for it, which a call nested inside (``call`` again) may not outlive.
        self.cap: float | None = None
        # The last error the other side answered with: the caller tells it apart from a failure
        # of the channel itself (a plugin's ``PermissionError`` is an ``OSError`` too).
        self.replied: BaseException | None = None
        self.send_tracebacks = send_tracebacks
        self.wire = wire
        self.handler = handler
        self.limit = limit
        self._tokens = itertools.count(1)
        self._sent_errors: dict[int, BaseException] = {}
        # Errors the other side answered our calls with, by identity, with the token it gave
        # them: one that reaches our answer unhandled is named back by that token (``"back"``),
        # so the other side raises its own exception again (a site's outage met by a plugin's
        # API call stays the site's error, not the plugin's).
        self._got_errors: dict[int, tuple[BaseException, int]] = {}
        self._serving = 0  # requests of the other side being answered (nested in each other)
        self._buffer = bytearray()
        self._timeout = 0.0  # no receive timeout: reads block
        self._send_timeout = 0.0  # no send timeout: writes block
        self.depth = 0

    def _sockopt(self, whole: int, micro: int, option: str = "SO_RCVTIMEO") -> None:
        import socket

        sock = socket.socket(fileno=self.fd)
        try:
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, option),
                            struct.pack("ll", whole, micro))
        finally:
            sock.detach()

    def close(self) -> None:
        """Mark the channel closed (its owner closes the descriptor): any use raises
        ``ChannelClosed`` from now on."""
        self.closed = True

    def send(self, message: Any, deadline: float | None = None) -> None:
        self._write(self._encode(message), deadline)

    def send_one_way(self, request: Any) -> None:
        """Send ``request`` without waiting for (or getting) a reply (see ``ONE_WAY``)."""
        self._write(self.wire.dumps({"n": request}))

    def _write(self, payload: bytes, deadline: float | None = None) -> None:
        """Write one frame; with ``deadline``, raise ``WorkerTimeout`` past it: the other side
        may stop reading, and a write into a full socket buffer would wait for ever (the
        socket's send timeout bounds each wait, as its receive timeout does for reads)."""
        if self.closed:
            raise ChannelClosed("the channel was closed")
        view = memoryview(_HEADER.pack(len(payload)) + payload)
        while True:
            try:
                view = view[os.write(self.fd, view):]
                if not view:
                    return
            except BlockingIOError:  # the send timeout ran out
                pass
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise ChannelClosed(str(exc)) from None
            if deadline is not None:  # (a part was written, or none in the send timeout)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WorkerTimeout("the other side stopped reading its channel")
                if remaining < self._send_timeout - 0.001:
                    self._set_timeout(remaining, "SO_SNDTIMEO")

    def _fill(self, deadline: float | None) -> None:
        while True:
            if self.closed:
                raise ChannelClosed("the channel was closed")
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WorkerTimeout("no answer within the time budget")
                # One blocking read bounded by the socket's receive timeout (changed only when
                # it would overshoot the deadline): no poll() per message.
                if not self._timeout or remaining < self._timeout - 0.001:
                    self._set_timeout(remaining)
            try:
                chunk = os.read(self.fd, _CHUNK)
            except BlockingIOError:
                continue  # the receive timeout ran out: look at the deadline again
            if not chunk:
                raise ChannelClosed("the other end closed the channel")
            self._buffer += chunk
            return

    def _set_timeout(self, seconds: float, option: str = "SO_RCVTIMEO") -> None:
        whole = int(seconds)
        micro = int((seconds - whole) * 1e6) or (0 if whole else 1)  # 0 s would mean "forever"
        self._sockopt(whole, micro, option)
        if option == "SO_RCVTIMEO":
            self._timeout = seconds
        else:
            self._send_timeout = seconds

    def timeout(self, seconds: float) -> None:
        """Make reads and writes wait at most ``seconds`` (the caller's budget) before the
        deadline check."""
        if abs(seconds - self._timeout) > 0.001:
            self._set_timeout(seconds)
        if abs(seconds - self._send_timeout) > 0.001:
            self._set_timeout(seconds, "SO_SNDTIMEO")

    def receive(self, deadline: float | None = None) -> Any:
        """Read and decode one message (waiting at most until ``deadline``)."""
        while len(self._buffer) < 4:
            self._fill(deadline)
        (size,) = _HEADER.unpack_from(self._buffer)
        if size > self.limit:
            raise WireError(f"a message of {size} bytes is over the limit of {self.limit} bytes")
        while len(self._buffer) < 4 + size:
            self._fill(deadline)
        raw = bytes(self._buffer[4 : 4 + size])
        del self._buffer[: 4 + size]
        if self.unpacks and raw[:1] != b"{":
            return self.wire.unpack(raw)
        try:
            return self.wire.loads(raw, deadline)
        except DecodeTimeout:
            if deadline is None:
                raise
            raise WorkerTimeout("the answer took too long to decode") from None

    def call(self, request: Any, deadline: float | None = None,
             args: tuple[Any, ...] | list[Any] = ()) -> Any:
        """Send ``request``; serve nested requests until the reply comes; return its value
        (an item of ``args``, the call's positional arguments, when the reply says the result
        is that argument unchanged).

        Raises the error the other side replied with, ``WorkerTimeout`` past ``deadline``
        (extended by the time spent serving the other side's uncharged requests; never past
        the deadline of a call this one is nested in through a charged request),
        ``ChannelClosed``, ``WireError``.
        """
        if self.cap is not None and (deadline is None or deadline > self.cap):
            deadline = self.cap
        if deadline is not None and not self._send_timeout:
            self._set_timeout(max(deadline - time.monotonic(), 0.001), "SO_SNDTIMEO")
        self.send({"q": request}, deadline)
        self.depth += 1
        try:
            while True:
                message = self.receive(deadline)
                if type(message) is not dict:
                    raise WireError("malformed message")
                if "r" in message:
                    return message["r"]
                if "s" in message:
                    index = message["s"]
                    if type(index) is not int or not 0 <= index < len(args):
                        raise WireError("malformed message")
                    return args[index]
                if "e" in message:
                    error = self._error(message["e"])
                    self.replied = error
                    raise error
                if "q" in message or "n" in message:
                    # (requests sent ahead are read without waiting, so without the look at
                    # the deadline a wait makes: thousands of them held the call's thread)
                    started = time.monotonic()
                    if deadline is not None and started > deadline:
                        raise WorkerTimeout("no answer within the time budget")
                if "q" in message:
                    request = message["q"]
                    charged = self.uncharged is None or not self.uncharged(request)
                    outer, self.cap = self.cap, (deadline if charged else None)
                    try:
                        payload = self._answer(request)
                    finally:
                        self.cap = outer
                    if deadline is not None and not charged:
                        deadline += time.monotonic() - started
                    self._write(payload, deadline)
                    continue
                if "n" in message:
                    self.serve_one_way(message["n"])
                    continue
                raise WireError("malformed message")
        finally:
            self.depth -= 1
            if self.depth == 0:
                self._sent_errors.clear()
                if not self._serving:
                    self._got_errors.clear()

    def _error(self, data: Any) -> BaseException:
        if type(data) is dict:
            back = data.get("back")
            if type(back) is int and back in self._sent_errors:
                return self._sent_errors[back]  # ours, passed back unhandled
        exc = rebuild_error(data, self.owner)
        token = data.get("token") if type(data) is dict else None
        if type(token) is int:
            if len(self._got_errors) >= _MAX_GOT_ERRORS:  # the oldest ones go first
                del self._got_errors[next(iter(self._got_errors))]
            self._got_errors[id(exc)] = (exc, token)
        return exc

    def serve_one_way(self, request: Any) -> None:
        """Do one one-way request of the other side: nothing is sent back; an error goes to
        ``one_way_failed`` (or is dropped without one)."""
        try:
            if type(request) is not dict or request.get("op") != "api" or (
                request.get("p") not in ONE_WAY
            ):
                raise ValueError("only the calls of ONE_WAY may be sent one-way")
            self.handler(request)
        except (ChannelClosed, WorkerTimeout):
            raise
        except Exception as exc:
            if self.one_way_failed is not None:
                self.one_way_failed(request, exc)

    def serve(self, request: Any, deadline: float | None = None) -> None:
        """Answer one request of the other side (writing the answer by ``deadline``)."""
        self._write(self._answer(request), deadline)

    def _answer(self, request: Any) -> bytes:
        """The encoded answer to one request of the other side."""
        self._serving += 1
        try:
            return self._answer_with(request)
        finally:
            self._serving -= 1
            if not self._serving and not self.depth:
                self._got_errors.clear()

    def _answer_with(self, request: Any) -> bytes:
        try:
            result = self.handler(request)
            return self._encode({"s": result.index} if type(result) is Same else {"r": result})
        except (ChannelClosed, WorkerTimeout):
            raise
        except Exception as exc:
            token = None
            if self.depth:  # only an error inside our own call can come back to us
                token = next(self._tokens)
                self._sent_errors[token] = exc
            data = describe_error(exc, token, traceback_text=self.send_tracebacks)
            got = self._got_errors.get(id(exc))
            if got is not None and got[0] is exc:  # the other side's own error, unhandled
                data["back"] = got[1]
            return self._encode({"e": data})
