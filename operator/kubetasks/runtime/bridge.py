"""One event loop for a task's async code, whoever calls it: the task, its steps, its hooks and its
middleware.

An async client (aiohttp, asyncpg, an SDK's) belongs to the loop that made it, so a client made in
an async hook or middleware must be used on that loop. ``asyncio.run`` for each call would give
every hook and step a loop of its own, and an async middleware's ``await next()`` could not run
the task at all (a loop cannot be run inside itself). Here:

- the attempt's sync code runs in the thread that called it: the main thread, where SIGTERM raises
  Stopped (runtime.stopping);
- its async code runs on one event loop, in a thread of its own started at the first coroutine;
- :func:`run` hands a coroutine to that loop and waits for it; while it waits it runs, in its own
  thread, what the loop hands back with :func:`hand_back`: an async middleware's ``await next()``
  runs the rest of the attempt (sync hooks, sync middleware, the task) there.

Each side sees the other's context variables (a copy, taken as the work is handed over), as an
``await`` would: a span or scope set around ``next()`` holds inside it.

A task a hook leaves running on the loop (a heartbeat, a client's reader) keeps running through
the attempt; at its end :func:`close` cancels what is left and waits for it to unwind, as
``asyncio.run`` does when its coroutine returns.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import queue
import threading
import typing
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)
CLOSE_TIMEOUT = 5.0  # seconds the tasks left on the loop have to unwind at the attempt's end

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
Inbox = queue.SimpleQueue[Callable[[], None] | asyncio.Task[Any]]  # work handed back, then the ended task
# In a coroutine's context: the inbox of the run() that started it, where its hand_back()s go (runs
# nest: an async middleware's next() runs the task, which may be async too, in another run()).
_inbox: contextvars.ContextVar[Inbox] = contextvars.ContextVar("kubetasks_bridge_inbox")


class _Escaped(Exception):
    """SystemExit or KeyboardInterrupt raised by a coroutine, carried out of the loop's thread,
    which they would otherwise end (asyncio lets them through), to be raised again by :func:`run`."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


def _the_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            _thread = threading.Thread(target=loop.run_forever, name="kubetasks-async", daemon=True)
            _thread.start()
            _loop = loop
        return _loop


def on_loop() -> bool:
    """Whether this is the attempt's loop, running the caller."""
    try:
        return asyncio.get_running_loop() is _loop
    except RuntimeError:
        return False


async def _settled(awaitable: Awaitable[Any]) -> Any:
    try:
        value = await awaitable
        while inspect.isawaitable(value):  # `return next()` in an async middleware: its value, not its future
            value = await value
        return value
    except (SystemExit, KeyboardInterrupt) as e:
        raise _Escaped(e) from None


def run(awaitable: Awaitable[T]) -> T:
    """Runs ``awaitable`` to its end on the attempt's loop and returns its value (or raises its
    error), from sync code: not from the loop itself, which would wait for itself. An exception
    raised in this thread meanwhile (Stopped, at a SIGTERM) cancels the coroutine, waits for it
    to unwind (its ``finally`` blocks), and is raised."""
    if on_loop():
        raise RuntimeError("kubetasks.runtime.bridge.run called from the attempt's own event loop")
    loop, context, inbox = _the_loop(), contextvars.copy_context(), Inbox()
    context.run(_inbox.set, inbox)
    started: Future[asyncio.Task[Any]] = Future()

    def start() -> None:
        task = loop.create_task(_settled(awaitable), context=context)
        task.add_done_callback(inbox.put)
        started.set_result(task)

    loop.call_soon_threadsafe(start)
    try:
        task = _serve(inbox)
    except BaseException:
        loop.call_soon_threadsafe(started.result().cancel)
        _serve(inbox)  # until it has unwound
        raise
    try:
        return typing.cast(T, task.result())  # its value, its error, or CancelledError
    except _Escaped as e:
        raise e.error from None


def _serve(inbox: Inbox) -> asyncio.Task[Any]:
    """Runs what the loop hands back until the coroutine has ended; its task, done."""
    while not isinstance(item := inbox.get(), asyncio.Task):
        item()
    return item


async def hand_back(fn: Callable[[], T]) -> T:
    """Awaited in a coroutine on the attempt's loop: ``fn()`` run in the thread that waits for the
    loop (see :func:`run`). Its exceptions, Stopped included, are raised here. Handed over only
    when awaited: a ``next()`` an async middleware never awaits runs nothing, later or ever."""
    loop, context = asyncio.get_running_loop(), contextvars.copy_context()
    future: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def work() -> None:
        try:
            value = context.run(fn)
        except BaseException as e:  # noqa: B036 - Stopped too: the coroutine decides what it means
            loop.call_soon_threadsafe(settle, None, e)
        else:
            loop.call_soon_threadsafe(settle, value, None)

    _inbox.get().put(work)
    return await future


def close(timeout: float = CLOSE_TIMEOUT) -> None:
    """The attempt is over: the tasks still on its loop are cancelled and waited for (their
    ``finally`` blocks, a client's close), async generators are closed, and the loop stops, as
    ``asyncio.run`` ends. One that has not unwound within ``timeout`` seconds is left to the
    process's exit. A next coroutine starts a new loop."""
    global _loop, _thread
    with _lock:
        loop, thread, _loop, _thread = _loop, _thread, None, None
    if loop is None or thread is None or not thread.is_alive():
        return

    async def wind_down() -> int:
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in left:
            task.cancel()
        ended, stuck = await asyncio.wait(left, timeout=timeout) if left else (set(), set())
        for task in ended:
            if not task.cancelled() and task.exception() is not None:
                error = task.exception()
                log.warning("a task left on the event loop failed as the attempt ended: %s: %s",
                            type(error).__name__, error, exc_info=error)
        await loop.shutdown_asyncgens()
        return len(stuck)

    try:
        stuck = asyncio.run_coroutine_threadsafe(wind_down(), loop).result()
        if stuck:
            log.warning("%d of the tasks left on the event loop did not end within %.0f s of the attempt's end",
                        stuck, timeout)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()
