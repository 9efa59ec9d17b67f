"""Peers benchmark: tresen and ejabberd side by side, same load shape, one invocation.

tresen runs exactly as in ``bench/relay.py`` (imported, not copied): ``python -m tresen serve``
on a fresh database, driven by relay.py's picows load generator. Then ejabberd (Debian's
package, 23.01 on Debian 12) is started by this script on 127.0.0.1 with a configuration it
writes to a temporary folder (its own spool and log folders, free ports, mnesia, no offline
storage, no archive, no shaper), its users are registered in bulk through its HTTP API
(``import_piefxis`` of a XEP-0227 file: ejabberdctl's command), and it is driven by a lean XMPP
client written here: plain asyncio on uvloop and expat, stream + SASL PLAIN + bind + presence,
``<message>`` stanzas with a 200-character body, XEP-0184 receipts in the receipt phase.
``--peers ejabberd,prosody`` adds Prosody (Debian's 0.12), run the same way.

The same phases as relay.py, on every server:

1. ``deliver``: N sender/receiver pairs, at most ``--window`` messages in flight per pair;
   messages per second counted at the receivers;
2. ``receipt``: the same with a delivery receipt per message; counted when it is back at the
   sender;
3. ``latency``: the pairs paced to fixed total rates; from writing the message to the receiver
   parsing it;
4. ``idle``: the server's RSS with 2,000 and then 8,000 idle clients; the slope per client.

Every phase ends with a drain: each message delivered exactly once and in order (and its
receipt back), no error, no lost connection; a phase that fails reports no figure.

The machine is shared, so each server's run also reports the CPU that other processes used
meanwhile; ``--rounds N`` alternates the servers N times and reports the medians.

Progress and a table with the tresen / peer ratios go to stderr; the last line on stdout is one
JSON object of all figures. Run: ``.venv/bin/python bench/peers.py --seconds 5``
(see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import glob
import json
import os
import re
import resource
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from xml.parsers import expat

import httpx
import psutil
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import relay

HOST = "bench.local"
#: every user's password, new for each run (the server listens on 127.0.0.1 only)
PASSWORD = secrets.token_hex(8)
#: the body: send time (perf_counter_ns), '.', the pair's message number, '.', padding
BODY_HEAD = 34
PEERS = ("ejabberd", "prosody")


def install_hint(package: str, version: str) -> str:
    return (
        f"{package} is not installed: install Debian's package ({version} on Debian 12) with\n"
        f"    apt-get install -y {package}\n"
        f"The benchmark starts its own {package} on 127.0.0.1 with a configuration it writes;\n"
        "the system service can stay stopped. Or leave it out with --peers (--peers '' runs\n"
        "tresen alone)."
    )


# ---------------------------------------------------------------- the servers


class XmppServer:
    """An XMPP server as a child process on 127.0.0.1, in a folder of its own."""

    name = ""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / f"{self.name}-{secrets.token_hex(3)}"
        self.port = relay.free_port()
        self.version = ""
        self.proc: asyncio.subprocess.Process | None = None
        self.ps: psutil.Process | None = None

    async def spawn(self, command: list[str], env: dict[str, str], ports: list[int]) -> None:
        """Start ``command``, its output to log/console.log; wait until ``ports`` accept."""
        logs = self.dir / "log"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / "console.log").open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *command, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT, cwd=self.dir
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise relay.BenchFailure(f"{self.name} exited at startup:\n{self.log_tail()}")
            try:
                for port in ports:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
            except OSError:
                await asyncio.sleep(0.2)
                continue
            self.ps = psutil.Process(self.proc.pid)
            return
        raise relay.BenchFailure(f"{self.name} did not listen within 60 s:\n{self.log_tail()}")

    async def start(self) -> None:
        raise NotImplementedError

    async def register(self, users: Sequence[str]) -> None:
        """Create the users, all with PASSWORD (after start)."""
        raise NotImplementedError

    @property
    def pid(self) -> int:
        assert self.ps is not None
        return self.ps.pid

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for path in sorted((self.dir / "log").glob("*.log")):
            with contextlib.suppress(OSError):
                out += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)

    def alive(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            raise relay.BenchFailure(f"{self.name} died:\n{self.log_tail()}")

    def cpu(self) -> float:
        assert self.ps is not None
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        assert self.ps is not None
        return int(self.ps.memory_info().rss)

    async def stop(self) -> None:
        """SIGTERM (both servers shut down cleanly on it); SIGKILL after 20 s."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


def find_ejabberd() -> tuple[str, str, str]:
    """(erl, ERL_LIBS, version) of the installed ejabberd, or exit with what to install."""
    ctl = shutil.which("ejabberdctl") or "/usr/sbin/ejabberdctl"
    libs, erl = "", shutil.which("erl") or ""
    with contextlib.suppress(OSError):
        text = Path(ctl).read_text(errors="replace")
        if m := re.search(r"^ERL_LIBS='?([^'\n]*)'?", text, re.M):
            libs = m.group(1)
        if m := re.search(r'^ERL="?([^"\n]*)"?', text, re.M):
            erl = m.group(1) if os.access(m.group(1), os.X_OK) else erl
    patterns = [f"{libs}/ejabberd-*/ebin/ejabberd.app"] if libs else []
    patterns += [
        "/usr/lib/*/ejabberd-*/ebin/ejabberd.app",
        "/usr/lib/erlang/lib/ejabberd-*/ebin/ejabberd.app",
    ]
    candidates = [path for pattern in patterns for path in glob.glob(pattern)]
    if not candidates or not erl:
        raise SystemExit(install_hint("ejabberd", "23.01"))
    app = Path(sorted(candidates)[-1])
    version = app.parent.parent.name.removeprefix("ejabberd-")
    return erl, str(app.parent.parent.parent), version


class Ejabberd(XmppServer):
    """ejabberd with a configuration written for the bench: mnesia, no TLS, no shaper, no
    offline storage or archive; the HTTP API only for the bulk registration.

    Runs the Erlang VM directly (``erl -s ejabberd``, what ``ejabberdctl foreground`` runs) as
    the current user, without Erlang distribution: nothing else to start, nothing left behind.
    """

    name = "ejabberd"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.erl, self.erl_libs, self.version = find_ejabberd()
        self.http_port = relay.free_port()

    def config(self) -> str:
        return f"""\
hosts: ["{HOST}"]
loglevel: warning
log_rotate_count: 0
hide_sensitive_log_data: true
auth_method: internal
auth_password_format: plain
default_db: mnesia
listen:
  -
    port: {self.port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 262144
    shaper: none
    access: all
    backlog: 1024
  -
    port: {self.http_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
acl:
  loopback:
    ip: [127.0.0.0/8]
api_permissions:
  "bench registers its users":
    from: [mod_http_api]
    who:
      access:
        allow:
          - acl: loopback
    what: ["import_piefxis"]
modules:
  mod_http_api: {{}}
"""

    async def start(self) -> None:
        spool, logs = self.dir / "spool", self.dir / "log"
        spool.mkdir(parents=True)
        logs.mkdir()
        config = self.dir / "ejabberd.yml"
        config.write_text(self.config())
        env = {
            **os.environ,
            "EJABBERD_CONFIG_PATH": str(config),
            "EJABBERD_LOG_PATH": str(logs / "ejabberd.log"),
            "ERL_LIBS": self.erl_libs,
            "ERL_CRASH_DUMP": str(logs / "erl_crash.dump"),
            "ERL_MAX_PORTS": "32000",
            "ERL_MAX_ETS_TABLES": "1400",
        }
        # ejabberdctl's flags (less +K, a no-op since OTP 21)
        command = [self.erl, "+P", "250000", "-env", "ERL_CRASH_DUMP_BYTES", "0"]
        command += ["-mnesia", "dir", f'"{spool}"', "-s", "ejabberd", "-noinput"]
        await self.spawn(command, env, [self.port, self.http_port])
        self.ps = beam_process(self.pid)

    async def register(self, users: Sequence[str]) -> None:
        """Register the users in one call: ``import_piefxis`` (XEP-0227 file) over the HTTP API.

        The same command as ``ejabberdctl import_piefxis``; about 2,000 users a second here,
        where one ``register`` request per user manages about 200.
        """
        path = self.dir / "users.xml"
        entries = "".join(f"<user name='{u}' password='{PASSWORD}'/>" for u in users)
        path.write_text(
            "<?xml version='1.0' encoding='UTF-8'?><server-data xmlns='urn:xmpp:pie:0'>"
            f"<host jid='{HOST}'>{entries}</host></server-data>"
        )
        url = f"http://127.0.0.1:{self.http_port}/api/import_piefxis"
        async with httpx.AsyncClient(timeout=600) as http:
            r = await http.post(url, json={"file": str(path)})
        if r.status_code != 200 or r.text.strip() != "0":
            raise relay.BenchFailure(f"import_piefxis: {r.status_code} {r.text[:500]}")


def beam_process(pid: int) -> psutil.Process:
    """The Erlang VM itself (``erl`` execs into it; look among the children otherwise)."""
    proc = psutil.Process(pid)
    if "beam" in proc.name():
        return proc
    for child in proc.children(recursive=True):
        if "beam" in child.name():
            return child
    return proc


def find_prosody() -> tuple[str, str]:
    """(the prosody executable, its version), or exit with what to install."""
    exe = shutil.which("prosody") or "/usr/bin/prosody"
    version = ""
    with contextlib.suppress(OSError):
        text = Path(exe).read_text(errors="replace")
        if m := re.search(r"^CFG_SOURCEDIR='([^']*)'", text, re.M):
            version = (Path(m.group(1)) / "prosody.version").read_text().strip()
    if not os.access(exe, os.X_OK) or not version:
        raise SystemExit(install_hint("prosody", "0.12.3"))
    return exe, version


class Prosody(XmppServer):
    """Prosody with a configuration written for the bench: internal storage in the run's
    folder, plain-text passwords, no TLS, no offline storage, no s2s, no limits module.

    Its users are written straight into its storage (one ``accounts/<user>.dat`` file each,
    what ``prosodyctl register`` writes) before it starts.
    """

    name = "prosody"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.exe, self.version = find_prosody()

    def config(self) -> str:
        return f"""\
run_as_root = true
pidfile = "{self.dir}/prosody.pid"
data_path = "{self.dir}/data"
log = {{ {{ levels = {{ min = "warn" }}, to = "console" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.port} }}
c2s_interfaces = {{ "127.0.0.1" }}
modules_enabled = {{ "saslauth" }}
modules_disabled = {{ "offline", "s2s", "s2s_auth_certs" }}
authentication = "internal_plain"
storage = "internal"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
VirtualHost "{HOST}"
"""

    async def register(self, users: Sequence[str]) -> None:
        accounts = self.dir / "data" / HOST.replace(".", "%2e") / "accounts"
        accounts.mkdir(parents=True, exist_ok=True)
        for user in users:
            (accounts / f"{user}.dat").write_text(f'return {{ ["password"] = "{PASSWORD}"; }};\n')

    async def start(self) -> None:
        (self.dir / "data").mkdir(parents=True)
        config = self.dir / "prosody.cfg.lua"
        config.write_text(self.config())
        await self.spawn([self.exe, "-F", "--config", str(config)], dict(os.environ), [self.port])


SERVERS: dict[str, Callable[[Path], XmppServer]] = {"ejabberd": Ejabberd, "prosody": Prosody}


# ---------------------------------------------------------------- the XMPP load generator

STREAM_OPEN = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    f"xmlns:stream='http://etherx.jabber.org/streams' to='{HOST}' version='1.0'>"
).encode()
BIND = (
    b"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
    b"<resource>bench</resource></bind></iq>"
)
RECEIPT = b"<message to='%s' id='r%s'><received xmlns='urn:xmpp:receipts' id='%s'/></message>"
TAIL = b"</body></message>"
TAIL_REQUEST = b"</body><request xmlns='urn:xmpp:receipts'/></message>"


class XmppCounters(relay.Counters):
    """relay.py's counters, plus whether the senders ask for receipts."""

    def __init__(self, window: int) -> None:
        super().__init__(window)
        #: receipt phase: messages carry <request/>, the window closes on the receipt;
        #: otherwise it closes when the receiver has the message
        self.receipts_on = False


class Xmpp(asyncio.Protocol):
    """One client's stream: SASL PLAIN, bind, presence; then the stanzas of its role.

    expat parses the stream incrementally; a top-level element is handled at its end tag.
    """

    def __init__(self, c: XmppCounters, user: str) -> None:
        self.c = c
        self.user = user
        self.jid = f"{user}@{HOST}"
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.leaving = False
        self.stage = "sasl"
        self.depth = 0
        self.attrs: dict[str, str] = {}
        self.in_body = False
        self.body = ""
        self.received: str | None = None
        self.request = False
        self.child = ""
        self.new_parser()

    def new_parser(self) -> None:
        parser = expat.ParserCreate()
        parser.buffer_text = True
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.end
        parser.CharacterDataHandler = self.chars
        self.parser = parser
        self.depth = 0

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport
        self.write(STREAM_OPEN)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.Parse(data, False)
        except expat.ExpatError as exc:
            self.fail(f"bad XML: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.leaving:
            self.c.closes += 1
        if not self.ready.done():
            self.ready.set_exception(relay.BenchFailure(f"{self.jid} lost before ready: {exc}"))

    # expat

    def start(self, name: str, attrs: dict[str, str]) -> None:
        depth = self.depth = self.depth + 1
        if depth == 2:
            self.attrs = attrs
            self.received = None
            self.request = False
            self.child = ""
        elif depth == 3:
            if name == "body":
                self.in_body = True
                self.body = ""
            elif name == "received":
                self.received = attrs.get("id", "")
            elif name == "request":
                self.request = True
            elif not self.child:
                self.child = name

    def chars(self, text: str) -> None:
        if self.in_body:
            self.body += text

    def end(self, name: str) -> None:
        depth = self.depth
        self.depth = depth - 1
        if depth == 3:
            self.in_body = False
        elif depth == 2:
            if name == "message":
                if self.attrs.get("type") == "error":
                    self.c.errors[f"message error: {self.child}"] += 1
                else:
                    self.on_message()
            else:
                self.on_element(name)
        elif depth == 1:
            self.fail("the server closed the stream")

    def on_element(self, name: str) -> None:
        attrs, stage = self.attrs, self.stage
        if name == "stream:features":
            if stage == "sasl":
                plain = base64.b64encode(f"\0{self.user}\0{PASSWORD}".encode())
                self.write(
                    b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                    + plain
                    + b"</auth>"
                )
            elif stage == "bind":
                self.write(BIND)
        elif name == "success" and stage == "sasl":
            self.stage = "bind"
            self.new_parser()
            self.write(STREAM_OPEN)
        elif name == "iq" and attrs.get("id") == "bind" and stage == "bind":
            if attrs.get("type") != "result":
                self.fail(f"bind refused: {self.child}")
                return
            self.stage = "presence"
            self.write(b"<presence/>")
        elif name == "presence":
            # the server echoes the initial presence to the session that sent it
            if stage == "presence" and not self.ready.done():
                self.stage = "ready"
                self.ready.set_result(None)
        elif name in ("failure", "stream:error"):
            self.fail(f"{name}: {self.child}")
        elif name == "iq" and attrs.get("type") in ("get", "set"):
            self.c.unexpected[f"iq {self.child}"] += 1

    def fail(self, reason: str) -> None:
        self.c.errors[reason[:120]] += 1
        if not self.ready.done():
            self.ready.set_exception(relay.BenchFailure(f"{self.jid}: {reason}"))

    def on_message(self) -> None:
        self.c.unexpected["message"] += 1

    def leave(self) -> None:
        self.leaving = True
        if self.transport is not None:
            self.transport.abort()


class XmppPair:
    """A sender and a receiver client; the sender sends to the receiver's bare JID.

    Quacks like relay.Pair (``send``, ``settled`` and the counts), so that relay.py's
    ``closed_loop``, ``paced`` and ``drain`` run it unchanged.
    """

    __slots__ = (
        "backlog",
        "c",
        "delivered",
        "expect",
        "expect_receipt",
        "head",
        "in_flight",
        "next_n",
        "pad",
        "receipts",
        "receipts_expected",
        "receiver",
        "sender",
        "sent_acked",
    )

    def __init__(self, c: XmppCounters, receiver_jid: str, body_bytes: int) -> None:
        self.c = c
        self.sender: XmppSender | None = None
        self.receiver: XmppReceiver | None = None
        self.head = f"<message to='{receiver_jid}' type='chat' id='".encode()
        self.pad = b"x" * (body_bytes - BODY_HEAD)
        self.next_n = 0  # messages written (the next message's number)
        self.in_flight = 0  # written, not yet delivered (receipt phase: not yet receipted)
        self.sent_acked = 0  # left the window
        self.backlog = 0  # paced: due but the window was full
        self.delivered = 0
        self.receipts = 0
        self.receipts_expected = 0
        self.expect = 0  # the receiver's next message number
        self.expect_receipt = 0

    def send(self) -> None:
        n = self.next_n
        self.next_n = n + 1
        self.in_flight += 1
        if self.c.receipts_on:
            self.receipts_expected += 1
            tail = TAIL_REQUEST
        else:
            tail = TAIL
        assert self.sender is not None and self.sender.transport is not None
        self.sender.transport.write(
            b"%s%d'><body>%020d.%012d.%s%s"
            % (self.head, n, time.perf_counter_ns(), n, self.pad, tail)
        )

    def done_one(self) -> None:
        """One message left the window: refill it, as relay.SenderPeer.on_sent does."""
        self.in_flight -= 1
        self.sent_acked += 1
        c = self.c
        c.sent_acked += 1
        if self.backlog:
            while self.backlog and self.in_flight < c.window:
                self.backlog -= 1
                self.send()
        elif c.closed_loop and c.sending:
            while self.in_flight < c.window:
                self.send()

    def settled(self) -> bool:
        n = self.next_n
        return (
            self.backlog == 0
            and self.sent_acked == n == self.delivered
            and self.receipts == self.receipts_expected
        )


class XmppSender(Xmpp):
    def __init__(self, c: XmppCounters, user: str, pair: XmppPair) -> None:
        super().__init__(c, user)
        self.pair = pair

    def on_message(self) -> None:
        pair, c = self.pair, self.c
        received = self.received
        if received is None:
            c.unexpected["sender got a message"] += 1
            return
        if received != str(pair.expect_receipt):
            c.unexpected["receipt out of order"] += 1
        pair.expect_receipt = int(received) + 1
        pair.receipts += 1
        c.receipts += 1
        if c.receipts_on:
            pair.done_one()


class XmppReceiver(Xmpp):
    def __init__(self, c: XmppCounters, user: str, pair: XmppPair, sender_jid: str) -> None:
        super().__init__(c, user)
        self.pair = pair
        self.from_prefix = sender_jid + "/"

    def on_message(self) -> None:
        now = time.perf_counter_ns()
        pair, c, attrs = self.pair, self.c, self.attrs
        sender = attrs.get("from", "")
        if not sender.startswith(self.from_prefix) or self.received is not None:
            c.unexpected["receiver got a foreign message"] += 1
            return
        body = self.body
        stamp, n = int(body[:20]), int(body[21:33])
        if n != pair.expect:
            c.unexpected["out of order or duplicate"] += 1
        pair.expect = n + 1
        if c.lat_from <= stamp < c.lat_until:
            c.latencies.append(now - stamp)
        pair.delivered += 1
        c.delivered += 1
        if self.request:
            msg_id = attrs.get("id", "").encode()
            self.write(RECEIPT % (sender.encode(), msg_id, msg_id))
        elif not c.receipts_on:
            pair.done_one()


async def connect_all(
    server: XmppServer, make: Sequence[Callable[[], Xmpp]], *, concurrency: int = 64
) -> list[Xmpp]:
    """Open a stream per factory and wait until each is bound and available."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)

    async def one(factory: Callable[[], Xmpp]) -> Xmpp:
        async with gate:
            try:
                _, client = await loop.create_connection(factory, "127.0.0.1", server.port)
            except OSError as exc:
                raise relay.BenchFailure(f"cannot connect to {server.name}: {exc!r}") from exc
            try:
                await asyncio.wait_for(client.ready, 30)
            except TimeoutError:
                raise relay.BenchFailure(f"{client.jid}: not ready within 30 s") from None
            return client

    return list(await asyncio.gather(*(one(f) for f in make)))


# ---------------------------------------------------------------- one XMPP server


async def run_xmpp(server: XmppServer, opts: relay.Options) -> dict[str, Any]:
    """Start the server, register the users, run the phases, stop the server."""
    name = server.name
    result: dict[str, Any] = {"version": server.version}
    load_phases = [p for p in opts.phases if p != "idle"]
    idle = opts.idle if "idle" in opts.phases else []
    n_pair_users = 2 * opts.pairs if load_phases else 0
    total = n_pair_users + max(idle, default=0)
    users = [f"u{i}" for i in range(total)]
    await server.start()
    phases: dict[str, Any] = {}
    failures: dict[str, str] = {}
    result["phases"], result["failures"] = phases, failures
    try:
        t0 = time.perf_counter()
        await server.register(users)
        took = time.perf_counter() - t0
        result["setup"] = {"users_registered": total, "register_s": round(took, 1)}
        result["setup"]["server_rss_mb_at_start"] = round(server.rss() / 2**20, 1)
        relay.log(f"[{name}] {server.version}, pid {server.pid}, port {server.port}")
        relay.log(f"[{name}] registered {total} users in {took:.1f} s")
        if load_phases:
            await run_load(name, users[:n_pair_users], load_phases, server, opts, phases, failures)
        if idle:
            relay.log(f"[{name}] idle: connecting {', '.join(map(str, idle))} clients ...")
            try:
                phases["idle"] = await idle_phase(
                    users[n_pair_users:], idle, server, XmppCounters(opts.window)
                )
                kb = phases["idle"]["rss_kb_per_idle_conn"]
                relay.log(f"[{name}] idle: {kb} KB per connection")
            except relay.BenchFailure as exc:
                failures["idle"] = str(exc)
                relay.log(f"[{name}] idle FAILED: {exc}")
            await asyncio.sleep(0.5)
        result["setup"]["server_rss_mb_at_end"] = round(server.rss() / 2**20, 1)
    finally:
        t0 = time.perf_counter()
        await server.stop()
        relay.log(f"[{name}] stopped in {time.perf_counter() - t0:.1f} s")
    result.update(relay._figures(phases))
    result.pop("vs_ejabberd", None)
    return result


async def run_load(
    name: str,
    users: list[str],
    wanted: list[str],
    server: XmppServer,
    opts: relay.Options,
    phases: dict[str, Any],
    failures: dict[str, str],
) -> None:
    """Connect the pairs and run relay.py's load phases on them; stop at the first failure."""
    c = XmppCounters(opts.window)
    pairs: list[XmppPair] = []
    factories: list[Callable[[], Xmpp]] = []
    for s, r in zip(users[::2], users[1::2], strict=True):
        pair = XmppPair(c, f"{r}@{HOST}", opts.body_bytes)
        pairs.append(pair)
        factories.append(functools.partial(XmppSender, c, s, pair))
        factories.append(functools.partial(XmppReceiver, c, r, pair, f"{s}@{HOST}"))
    clients = await connect_all(server, factories)
    for client in clients:
        if isinstance(client, XmppSender):
            client.pair.sender = client
        elif isinstance(client, XmppReceiver):
            client.pair.receiver = client
    relay.log(f"[{name}] {len(pairs)} pairs connected")

    runs: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = []
    for kind in ("deliver", "receipt"):
        if kind in wanted:
            args = (pairs, c, server, opts.seconds, opts.warmup, kind)
            runs.append((kind, functools.partial(relay.closed_loop, *args)))
    if "latency" in wanted:
        for rate in opts.rates:
            args = (pairs, c, server, rate, opts.seconds, opts.warmup)
            runs.append((f"latency_{rate}", functools.partial(relay.paced, *args)))
    try:
        for phase, run in runs:
            c.receipts_on = phase == "receipt"
            for pair in pairs:
                pair.expect_receipt = pair.next_n
            relay.log(f"[{name}] {phase}: {opts.seconds:g} s (+{opts.warmup:g} s warm-up) ...")
            try:
                phases[phase] = figures = await run()
            except relay.BenchFailure as exc:
                failures[phase] = str(exc)
                relay.log(f"[{name}] {phase} FAILED: {exc}")
                return
            relay.log(f"[{name}] {phase}: {relay._brief(figures).replace('relay', name)}")
    finally:
        for client in clients:
            client.leave()
        await asyncio.sleep(0.5)


async def idle_phase(
    users: list[str], steps: list[int], server: XmppServer, c: XmppCounters
) -> dict[str, Any]:
    """Connect idle clients in steps (logged in, bound, available); RSS and the slope."""
    clients: list[Xmpp] = []
    points: list[dict[str, Any]] = [
        {"connections": 0, "rss_mb": round(await relay.sample_rss(server) / 2**20, 1)}
    ]
    rss_at: dict[int, int] = {}
    try:
        for target in steps:
            batch = users[len(clients) : target]
            t0 = time.perf_counter()
            clients += await connect_all(server, [functools.partial(Xmpp, c, u) for u in batch])
            took = time.perf_counter() - t0
            server.alive()
            rss = await relay.sample_rss(server)
            rss_at[target] = rss
            points.append(
                {
                    "connections": target,
                    "rss_mb": round(rss / 2**20, 1),
                    "connect_per_s": round(len(batch) / took),
                }
            )
            relay.log(f"  {target:>6} idle clients: {server.name} RSS {rss / 2**20:.1f} MB")
        if c.problems():
            raise relay.BenchFailure(f"idle clients had problems: {c.problems()}")
    finally:
        for client in clients:
            client.leave()
    lo, hi = steps[0], steps[-1]
    slope = (rss_at[hi] - rss_at[lo]) / (hi - lo) / 1024
    return {"rss_kb_per_idle_conn": round(slope, 1), "points": points}


# ---------------------------------------------------------------- side by side


def headline(result: dict[str, Any]) -> dict[str, float | None]:
    """Flat figures of one server: msgs/s, p50/p99 per rate, KB per idle connection."""
    flat: dict[str, float | None] = {
        "deliver_msgs_per_s": result.get("deliver_msgs_per_s"),
        "receipt_msgs_per_s": result.get("receipt_msgs_per_s"),
    }
    for rate, lat in result.get("latency_ms", {}).items():
        flat[f"latency_ms_{rate}_p50"] = lat["p50"]
        flat[f"latency_ms_{rate}_p99"] = lat["p99"]
    flat["rss_kb_per_idle_conn"] = result.get("rss_kb_per_idle_conn")
    for phase in ("deliver", "receipt"):
        flat[f"{phase}_server_cpu_us_per_msg"] = result.get("server_cpu_us_per_msg", {}).get(phase)
    return flat


def ratios(tresen: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    ours, theirs = headline(tresen), headline(peer)
    out: dict[str, float | None] = {}
    for key, value in ours.items():
        other = theirs.get(key)
        out[key] = None if value is None or not other else round(value / other, 2)
    return out


def summary(results: dict[str, Any], servers: list[str]) -> None:
    """Each figure of each server and the tresen / peer ratios, then the CPU, on stderr."""
    flats = {s: headline(results[s]) for s in servers}
    peers = [s for s in servers if s != "tresen" and "tresen" in flats]
    keys: list[str] = []
    for flat in flats.values():
        keys += [k for k in flat if k not in keys]
    head = f"{'':30}" + "".join(f"{s:>13}" for s in servers)
    print(head + "".join(f"{'tresen/' + p:>17}" for p in peers), file=sys.stderr)
    for key in keys:
        cells = []
        for s in servers:
            lat = _latency(results[s], key)
            star = "*" if lat is not None and lat.get("saturated") else ""
            cells.append(f"{relay._cell(flats[s].get(key))}{star}")
        line = f"{key:30}" + "".join(f"{x:>13}" for x in cells)
        for p in peers:
            line += f"{relay._cell(results[f'tresen_vs_{p}'].get(key)):>17}"
        print(line, file=sys.stderr)
    print("CPU % (load generator / server):", file=sys.stderr)
    for phase in ("deliver", "receipt", *(f"latency_{r}" for r in _rates(results, servers))):
        cells = []
        for s in servers:
            f = results[s].get("phases", results[s].get("phases_cpu_median", {})).get(phase, {})
            cells.append(f"{f.get('loadgen_cpu_pct', '-')} / {f.get('relay_cpu_pct', '-')}")
        print(f"  {phase:28}" + "".join(f"{x:>13}" for x in cells), file=sys.stderr)
    others = [results[s].get("others_cpu_pct") for s in servers]
    line = "".join(f"{relay._cell(x):>13}" for x in others)
    print(f"  {'other processes':28}{line}", file=sys.stderr)
    print(
        "(* the server did not sustain that rate; tresen/peer above 1 is better for msgs/s, "
        "worse for ms, KB and CPU µs; 100 % CPU = one core)",
        file=sys.stderr,
    )


def _latency(result: dict[str, Any], key: str) -> dict[str, Any] | None:
    if not key.startswith("latency_ms_"):
        return None
    rate = key.split("_")[2]
    lat: dict[str, Any] | None = result.get("latency_ms", {}).get(rate)
    return lat


def _rates(results: dict[str, Any], servers: list[str]) -> list[str]:
    rates = {r for s in servers for r in results[s].get("latency_ms", {})}
    return sorted(rates, key=int)


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=10.0, help="measured time of each load phase")
    p.add_argument("--warmup", type=float, default=None, help="unmeasured start of each phase")
    p.add_argument("--pairs", type=int, default=50, help="sender/receiver pairs")
    p.add_argument("--window", type=int, default=10, help="messages in flight per pair")
    p.add_argument("--body-bytes", type=int, default=200, help="bytes per message body")
    p.add_argument("--rates", type=relay.csv_ints, default=[1000, 5000], help="paced rates, msgs/s")
    p.add_argument(
        "--idle", type=relay.csv_ints, default=[2000, 8000], help="idle connection steps"
    )
    p.add_argument(
        "--phases",
        default=",".join(relay.PHASES),
        help=f"which of {','.join(relay.PHASES)} to run (in that order)",
    )
    p.add_argument(
        "--peers", default="ejabberd", help="peers to run: ejabberd and/or prosody (or '')"
    )
    p.add_argument(
        "--tresen-db",
        default="sqlite",
        help="tresen's backend as in relay.py: sqlite (synchronous=full, the default), "
        "sqlite-normal, postgres; or 'none' to run the peers only",
    )
    p.add_argument(
        "--pg-admin",
        default=os.environ.get("TRESEN_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="DSN used to create and drop tresen's fresh PostgreSQL database",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every server this many times, alternating; the figures are the medians",
    )
    p.add_argument("--workdir", type=Path, default=None, help="where databases and logs go")
    args = p.parse_args(argv)
    args.peers = [x.strip() for x in args.peers.split(",") if x.strip()]
    if set(args.peers) - set(PEERS):
        p.error(f"--peers takes some of {','.join(PEERS)}")
    if args.tresen_db not in ("sqlite", "sqlite-normal", "postgres", "none"):
        p.error("--tresen-db takes sqlite, sqlite-normal, postgres or none")
    if args.tresen_db == "none" and not args.peers:
        p.error("nothing to run")
    if len(args.idle) == 1 or (args.idle and args.idle != sorted(args.idle)):
        p.error("--idle takes at least two ascending steps (or none: --idle '')")
    if args.body_bytes < BODY_HEAD:
        p.error(f"--body-bytes must be at least {BODY_HEAD}")
    args.phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    if set(args.phases) - set(relay.PHASES) or not args.phases:
        p.error(f"--phases takes some of {','.join(relay.PHASES)}")
    if args.rounds < 1:
        p.error("--rounds takes a positive count")
    if args.warmup is None:
        args.warmup = min(1.0, args.seconds / 5)
    for peer in args.peers:  # before tresen's run: say at once what is missing
        {"ejabberd": find_ejabberd, "prosody": find_prosody}[peer]()
    return args


async def main_async(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    opts = relay.Options(
        seconds=args.seconds,
        warmup=args.warmup,
        pairs=args.pairs,
        window=args.window,
        body_bytes=args.body_bytes,
        rates=args.rates,
        idle=args.idle,
        phases=args.phases,
        workdir=workdir,
    )
    # relay.py lifts the per-device frame limits; the per-address ones (all the bench's
    # clients come from 127.0.0.1) are lifted here, inherited by the relay process
    for name, value in (
        ("TRESEN_MAX_CONNECTIONS_PER_ADDRESS", "1000000"),
        ("TRESEN_FRAMES_PER_SECOND_PER_ADDRESS", "100000000"),
        ("TRESEN_FRAME_BURST_PER_ADDRESS", "100000000"),
    ):
        os.environ.setdefault(name, value)
    servers = (["tresen"] if args.tresen_db != "none" else []) + args.peers
    rounds: dict[str, list[dict[str, Any]]] = {s: [] for s in servers}
    for n in range(args.rounds):
        if args.rounds > 1:
            relay.log(f"round {n + 1} of {args.rounds}")
        for name in servers:
            with Others() as others:
                result = await run_server(name, args, opts)
            result["others_cpu_pct"] = others.pct
            result.update(cpu_per_message(result.get("phases", {})))
            relay.log(f"[{name}] other processes used {others.pct} % CPU meanwhile")
            rounds[name].append(result)
    return {name: merge(results) for name, results in rounds.items()}


async def run_server(name: str, args: argparse.Namespace, opts: relay.Options) -> dict[str, Any]:
    """One server's whole run: setup, the phases, shutdown."""
    relay.log(f"[{name}] starting" + (f" on {args.tresen_db}" if name == "tresen" else ""))
    if name == "tresen":
        async with relay.fresh_database(args.tresen_db, opts.workdir, args.pg_admin) as db:
            try:
                result = await relay.run_backend(args.tresen_db, db, opts)
            except relay.BenchFailure as exc:
                relay.log(f"[tresen] FAILED: {exc}")
                result = {"db": db, "failures": {"setup": str(exc)}}
        result.pop("vs_ejabberd", None)  # against relay.py's reference figures
        return result
    server = SERVERS[name](opts.workdir)
    try:
        return await run_xmpp(server, opts)
    except relay.BenchFailure as exc:
        relay.log(f"[{name}] FAILED: {exc}")
        return {"version": server.version, "failures": {"setup": str(exc)}}
    finally:
        await server.stop()


def cpu_per_message(phases: dict[str, Any]) -> dict[str, dict[str, float]]:
    """CPU µs per message of the server and of the load generator in the closed-loop phases.

    Steadier than msgs/s on a shared machine: a server that gets less CPU delivers less, but
    spends about the same on each message.
    """
    out: dict[str, dict[str, float]] = {"server_cpu_us_per_msg": {}, "loadgen_cpu_us_per_msg": {}}
    for phase in ("deliver", "receipt"):
        f = phases.get(phase)
        if f and f["msgs_per_s"]:
            out["server_cpu_us_per_msg"][phase] = round(
                f["relay_cpu_pct"] * 1e4 / f["msgs_per_s"], 1
            )
            out["loadgen_cpu_us_per_msg"][phase] = round(
                f["loadgen_cpu_pct"] * 1e4 / f["msgs_per_s"], 1
            )
    return out


class Others:
    """The CPU that processes other than this one and its children used meanwhile.

    The machine is shared: a server that ran while something else was busy measured less.
    Machine-wide busy time (psutil) minus this process and its waited-for children (the
    server, stopped inside the block), over the wall time; 100 = one core.
    """

    def __enter__(self) -> Others:
        self.t0, self.busy0, self.own0 = time.perf_counter(), self.busy(), self.own()
        self.pct = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.t0
        others = (self.busy() - self.busy0) - (self.own() - self.own0)
        self.pct = round(max(0.0, 100 * others / wall), 1)

    @staticmethod
    def busy() -> float:
        t = psutil.cpu_times()
        return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))

    @staticmethod
    def own() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One server's rounds: the headline figures are the medians, each round is kept."""
    if len(results) == 1:
        return results[0]
    out: dict[str, Any] = {"rounds": results}
    for key in ("deliver_msgs_per_s", "receipt_msgs_per_s", "rss_kb_per_idle_conn"):
        out[key] = _median([r.get(key) for r in results])
    out["others_cpu_pct"] = _median([r.get("others_cpu_pct") for r in results])
    for key in ("server_cpu_us_per_msg", "loadgen_cpu_us_per_msg"):
        out[key] = {
            phase: _median([r.get(key, {}).get(phase) for r in results])
            for phase in ("deliver", "receipt")
        }
    latency: dict[str, Any] = {}
    for rate in sorted({rate for r in results for rate in r.get("latency_ms", {})}, key=int):
        runs = [r["latency_ms"][rate] for r in results if rate in r.get("latency_ms", {})]
        latency[rate] = {q: _median([x[q] for x in runs]) for q in ("p50", "p99")}
        latency[rate]["achieved_msgs_per_s"] = _median([x["achieved_msgs_per_s"] for x in runs])
        latency[rate]["saturated"] = sum(x["saturated"] for x in runs) * 2 > len(runs)
    out["latency_ms"] = latency
    phases: dict[str, dict[str, Any]] = {}
    for phase in {phase for r in results for phase in r.get("phases", {})}:
        runs = [r["phases"][phase] for r in results if phase in r.get("phases", {})]
        phases[phase] = {
            k: _median([x.get(k) for x in runs]) for k in ("loadgen_cpu_pct", "relay_cpu_pct")
        }
    out["phases_cpu_median"] = phases
    failures = {f"round {i + 1}": r["failures"] for i, r in enumerate(results) if r["failures"]}
    out["failures"] = failures
    return out


def _median(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    middle = statistics.median(present)
    return round(middle) if all(isinstance(v, int) for v in present) else round(middle, 3)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    limit = relay.raise_fd_limit(max(args.idle, default=0) + 2 * args.pairs + 256)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="tresen-peers-"))
        )
        workdir.mkdir(parents=True, exist_ok=True)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            results = runner.run(main_async(args, workdir))
    servers = list(results)
    failed = {s: r["failures"] for s, r in results.items() if r.get("failures")}
    if "tresen" in results:
        for peer in args.peers:
            results[f"tresen_vs_{peer}"] = ratios(results["tresen"], results[peer])
    results["params"] = {
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "pairs": args.pairs,
        "window": args.window,
        "body_bytes": args.body_bytes,
        "rates": args.rates,
        "idle_steps": args.idle,
        "phases": args.phases,
        "tresen_db": args.tresen_db,
        "peers": args.peers,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "rlimit_nofile": limit,
        "total_s": round(time.perf_counter() - started, 1),
        "cpu_pct_note": "100 = one core busy; relay_cpu_pct is the server's (tresen's relay, "
        "ejabberd's Erlang VM, prosody's Lua process); others_cpu_pct: every other process on "
        "the machine during that server's run",
        "ratio_note": "tresen/peer: above 1 is better for msgs/s, worse for ms, KB and CPU µs",
        "window_note": "tresen: a message leaves the window on the relay's 'sent' (persisted); "
        "XMPP: when the receiver has it (receipt phase: when its receipt is back)",
    }
    summary(results, servers)
    if failed:
        relay.log(f"FAILED phases (their figures are left out): {json.dumps(failed)[:2000]}")
    print(json.dumps(results, separators=(",", ":")))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
