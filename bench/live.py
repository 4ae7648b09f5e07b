"""An open-loop HTTP load generator on one asyncio loop: every request leaves at its scheduled time,
however slowly the server answers (so queueing shows as latency), on a connection of its own."""
import asyncio
import heapq
import resource
import time
from dataclasses import dataclass, field

TIMEOUT = 10.0  # a request not answered by then is an error: far beyond any latency target
MAX_IN_FLIGHT = 4000  # open sockets; beyond this the server is drowning and the step has failed


@dataclass
class Stream:
    """`senders` senders of one kind, each sending every `period` seconds, their send times spread
    evenly over the period: one request every period / senders seconds. `request(i, wall)` builds
    sender i's raw HTTP request; `seen(body, wall)`, if given, reads the answer's body."""

    kind: str
    senders: int
    period: float
    request: object
    seen: object = None

    @property
    def rate(self):
        return self.senders / self.period


@dataclass
class Outcome:
    """What one request met: the times are seconds on the loop's clock."""

    kind: str
    scheduled: float
    lateness: float  # sent minus scheduled: the generator's own delay
    latency: float  # from sending to the last byte of the answer
    status: int  # 0: no answer (connection error or timeout)
    in_window: bool
    error: str = ""


@dataclass
class Step:
    """The outcomes of one run, the CPU the generator used over the measured window, and why it ended."""

    outcomes: list = field(default_factory=list)
    window: float = 0.0
    cpu_seconds: float = 0.0
    aborted: str = ""  # why the run was stopped before its end: the criteria cannot be met any more
    scheduled: dict = field(default_factory=dict)  # in-window requests due, by kind
    at_window: dict = field(default_factory=dict)  # what `marks` returned at the window's start and end


def raw_request(method, path, body=b"", host="127.0.0.1"):
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: gpufs-bench\r\nConnection: close\r\n"
            + (f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n" if method == "POST" else "")
            + "\r\n")
    return head.encode() + body


class _Exchange(asyncio.Protocol):
    """One request on a connection of its own; the answer is complete when its body is (by
    Content-Length) or when the server closes (Connection: close)."""

    def __init__(self, raw, done):
        self.raw, self.done, self.data, self.length = raw, done, bytearray(), None

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.raw)

    def data_received(self, chunk):
        self.data += chunk
        if self.length is None and b"\r\n\r\n" in self.data:
            head = bytes(self.data[:self.data.index(b"\r\n\r\n") + 4])
            length = _header(head.lower(), b"content-length")
            self.length = len(head) + int(length) if length is not None else -1
        if self.length is not None and 0 <= self.length <= len(self.data):
            self._finish()
            self.transport.close()

    def connection_lost(self, exc):
        if exc is not None and not self.done.done():
            self.done.set_exception(exc)
        self._finish()

    def _finish(self):
        if self.done.done():
            return
        data = bytes(self.data)
        if b"\r\n\r\n" not in data:
            self.done.set_exception(ConnectionError("connection closed before an answer"))
            return
        head, body = data.split(b"\r\n\r\n", 1)
        if _header(head.lower() + b"\r\n", b"transfer-encoding") == b"chunked":
            body = _dechunk(body)
        self.done.set_result((int(head[9:12]), body))


async def fetch(host, port, raw, timeout=TIMEOUT):
    """(status, body) of one request on a new connection; TimeoutError after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    transport = None
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(lambda: _Exchange(raw, done), host, port)
            return await done
    finally:
        if transport is not None:
            transport.close()


def _open_files(wanted):
    """How many requests may be in flight: the soft limit on open files raised as far as the hard one
    allows (1,024 on many machines would turn an overloaded server into the generator's own errors)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + 256 if hard == resource.RLIM_INFINITY else min(hard, wanted + 256)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return wanted if soft == resource.RLIM_INFINITY else min(wanted, soft - 256)


def _header(head, name):
    start = head.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    return head[start:head.index(b"\r\n", start)].strip()


def _dechunk(data):
    out, pos = [], 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        pos = end + 4 + size


class Generator:
    """Runs streams for `warmup` + `window` seconds; `verdict(outcome, step)` may return a reason to stop
    early (a failed criterion that no later request can repair)."""

    def __init__(self, host, port):
        self.host, self.port = host, port

    def run(self, streams, warmup, window, verdict=None, marks=None, wall=None):
        return asyncio.run(self._run(streams, warmup, window, verdict, marks, wall))

    async def _run(self, streams, warmup, window, verdict, marks, wall):
        wall = wall or time.time
        loop = asyncio.get_running_loop()
        step = Step(window=window)
        t0 = loop.time() + 0.05
        begin, end = t0 + warmup, t0 + warmup + window
        heap = [(t0, n, 0) for n in range(len(streams))]  # (due, stream, how many it has sent)
        heapq.heapify(heap)
        tasks, stop = set(), None
        usage, fired = None, 0
        in_flight = _open_files(MAX_IN_FLIGHT)

        async def one(stream, i, due):
            raw = stream.request(i, wall())
            sent = loop.time()
            status, error, body = 0, "", b""
            try:
                status, body = await fetch(self.host, self.port, raw)
            except TimeoutError:
                error = f"no answer in {TIMEOUT:.0f} s"
            except (OSError, ValueError) as err:
                error = f"{type(err).__name__}: {err}"
            done = loop.time()
            outcome = Outcome(stream.kind, due, sent - due, done - sent, status, begin <= due < end, error)
            if status == 200 and stream.seen is not None:
                try:
                    stream.seen(body, wall(), outcome)
                except (ValueError, KeyError, TypeError) as err:  # a 200 whose body is not what the API says
                    outcome.error = f"unreadable answer: {type(err).__name__}: {err}"
            step.outcomes.append(outcome)
            nonlocal stop
            if stop is None and verdict is not None:
                stop = verdict(outcome, step)

        while heap and stop is None:
            due, n, sent = heap[0]
            if due >= end:
                break
            now = loop.time()
            if due > now:
                if usage is None and now >= begin:
                    usage = self._mark(step, "start", marks)
                await asyncio.sleep(due - now)
                continue
            if usage is None and due >= begin:
                usage = self._mark(step, "start", marks)
            stream = streams[n]
            heapq.heapreplace(heap, (t0 + (sent + 1) * stream.period / stream.senders, n, sent + 1))
            if begin <= due:
                step.scheduled[stream.kind] = step.scheduled.get(stream.kind, 0) + 1
            task = loop.create_task(one(stream, sent % stream.senders, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            fired += 1
            if fired % 16 == 0:
                await asyncio.sleep(0)  # behind schedule: let the requests already sent move too
            if len(tasks) > in_flight:
                stop = f"more than {in_flight} requests in flight"
        if stop is None:
            await asyncio.sleep(max(0.0, end - loop.time()))
        if usage is None:
            usage = self._mark(step, "start", marks)
        after = self._mark(step, "end", marks)
        step.cpu_seconds = after - usage
        step.window = min(window, loop.time() - begin) if stop else window
        step.aborted = stop or ""
        if tasks:
            await asyncio.wait(tasks, timeout=TIMEOUT + 1)
        return step

    @staticmethod
    def _mark(step, name, marks):
        """The generator's CPU seconds so far, and `marks()` kept under `name`; reading the marks
        (other processes' CPU, from /proc) falls outside the generator's window."""
        if marks is not None and name == "start":
            step.at_window[name] = marks()
        r = resource.getrusage(resource.RUSAGE_SELF)
        if marks is not None and name == "end":
            step.at_window[name] = marks()
        return r.ru_utime + r.ru_stime
