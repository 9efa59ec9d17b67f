"""The outbox's HTTP/1.1 client against real servers on port 0: keep-alive and its limits, the
ways an answer can end, the retry of a request that crossed a server's idle close (and no
other), timeouts, refused connections, redirects left alone, TLS with a CA of the test's own."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tresen.gateway.webhooks.http import (
    ConnectError,
    InvalidURL,
    ProtocolError,
    Timeout,
    WebhookClient,
)

HEADERS = {"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + "ab" * 32}
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


@dataclass
class Seen:
    conn: int  # which connection, in order of arrival
    n: int  # which request on it
    line: bytes
    headers: dict[bytes, bytes]
    body: bytes


# what to do with a request: (bytes to write, then close?), or None to close without answering
Reply = Callable[[Seen], Awaitable[tuple[bytes, bool] | None]]


async def ok(_: Seen) -> tuple[bytes, bool] | None:
    return OK, False


class RawServer:
    """An HTTP/1.1 server in a few lines, so a test says byte for byte what is answered."""

    def __init__(self, reply: Reply = ok, *, host: str = "127.0.0.1") -> None:
        self.reply = reply
        self.host = host
        self.seen: list[Seen] = []
        self.connections = self.open = self.max_open = 0
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self, tls: ssl.SSLContext | None = None) -> int:
        self.server = await asyncio.start_server(self.handle, self.host, 0, ssl=tls)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.connections
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        self.writers.add(writer)
        try:
            for n in range(10**6):
                head = await reader.readuntil(b"\r\n\r\n")
                line, *lines = head[:-4].split(b"\r\n")
                headers = {}
                for raw in lines:
                    name, _, value = raw.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
                seen = Seen(conn, n, line, headers, body)
                self.seen.append(seen)
                answer = await self.reply(seen)
                if answer is None:
                    return
                writer.write(answer[0])
                await writer.drain()
                if answer[1]:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self.open -= 1
            self.writers.discard(writer)
            writer.close()


@pytest.fixture
async def client() -> AsyncIterator[WebhookClient]:
    webhooks = WebhookClient(timeout=5, concurrency=4)
    yield webhooks
    await webhooks.close()


async def serve(reply: Reply = ok) -> tuple[RawServer, str]:
    server = RawServer(reply)
    port = await server.start()
    return server, f"http://127.0.0.1:{port}/hook"


async def until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.01)


# ------------------------------------------------------------------ keep-alive


async def test_sequential_posts_share_one_connection(client: WebhookClient) -> None:
    server, url = await serve()
    try:
        for n in range(20):
            assert await client.post(url + "?x=1", b'{"n":%d}' % n, HEADERS) == (200, "ok")
        assert server.connections == 1 and len(server.seen) == 20
        first = server.seen[0]
        assert first.line == b"POST /hook?x=1 HTTP/1.1"
        port = url.split(":")[2].split("/")[0]
        assert first.headers[b"host"] == f"127.0.0.1:{port}".encode()
        assert first.headers[b"user-agent"] == b"tresen-gateway"
        assert first.headers[b"content-type"] == b"application/json"
        assert first.headers[b"x-hub-signature-256"] == HEADERS["X-Hub-Signature-256"].encode()
        assert first.headers[b"content-length"] == b"7"
        assert [s.body for s in server.seen] == [b'{"n":%d}' % n for n in range(20)]
    finally:
        await server.stop()


async def test_connections_per_origin_are_bounded() -> None:
    release = asyncio.Event()

    async def held(_: Seen) -> tuple[bytes, bool] | None:
        await release.wait()
        return OK, False

    server, url = await serve(held)
    webhooks = WebhookClient(timeout=5, concurrency=3)
    try:
        posts = [asyncio.create_task(webhooks.post(url, b"{}", HEADERS)) for _ in range(10)]
        await until(lambda: len(server.seen) == 3)
        await asyncio.sleep(0.1)  # room for a connection past the bound to show up
        assert server.connections == 3 and len(server.seen) == 3
        release.set()
        assert await asyncio.gather(*posts) == [(200, "ok")] * 10
        assert server.connections == 3 and server.max_open == 3 and len(server.seen) == 10
    finally:
        await webhooks.close()
        await server.stop()


async def test_waiting_for_a_connection_counts_in_the_timeout() -> None:
    release = asyncio.Event()

    async def held(_: Seen) -> tuple[bytes, bool] | None:
        await release.wait()
        return OK, False

    server, url = await serve(held)
    webhooks = WebhookClient(timeout=5, concurrency=1)
    try:
        first = asyncio.create_task(webhooks.post(url, b"1", HEADERS))
        await until(lambda: len(server.seen) == 1)
        webhooks.timeout = 0.2  # the second post's deadline passes while the first holds on
        with pytest.raises(Timeout, match=r"no free connection to 127\.0\.0\.1:\d+ within 0\.2 s"):
            await webhooks.post(url, b"2", HEADERS)
        release.set()
        assert await first == (200, "ok")
        assert await webhooks.post(url, b"3", HEADERS) == (200, "ok")
        assert [(s.conn, s.body) for s in server.seen] == [(0, b"1"), (0, b"3")]
    finally:
        await webhooks.close()
        await server.stop()


async def test_idle_connections_are_closed_after_a_while() -> None:
    server, url = await serve()
    webhooks = WebhookClient(timeout=5, idle_seconds=0.05)
    try:
        assert (await webhooks.post(url, b"{}", HEADERS))[0] == 200
        await until(lambda: server.open == 0)  # the client hung up
        assert (await webhooks.post(url, b"{}", HEADERS))[0] == 200
        assert server.connections == 2
    finally:
        await webhooks.close()
        await server.stop()


# ----------------------------------------------------- a server's close, retried or not


async def test_request_crossing_an_idle_close_goes_once_more(client: WebhookClient) -> None:
    async def reply(seen: Seen) -> tuple[bytes, bool] | None:
        if seen.conn == 0 and seen.n == 1:  # as if its keep-alive time ran out just now
            return None
        return OK, False

    server, url = await serve(reply)
    try:
        assert await client.post(url, b"1", HEADERS) == (200, "ok")
        assert await client.post(url, b"2", HEADERS) == (200, "ok")
        assert [(s.conn, s.body) for s in server.seen] == [(0, b"1"), (0, b"2"), (1, b"2")]
    finally:
        await server.stop()


async def test_connection_closed_while_idle_is_replaced(client: WebhookClient) -> None:
    async def reply(_: Seen) -> tuple[bytes, bool] | None:
        return OK, True  # answers, then closes (no Connection: close): an idle timeout

    server, url = await serve(reply)
    try:
        assert (await client.post(url, b"1", HEADERS))[0] == 200
        await until(lambda: server.open == 0)
        assert (await client.post(url, b"2", HEADERS))[0] == 200
        assert [(s.conn, s.body) for s in server.seen] == [(0, b"1"), (1, b"2")]
    finally:
        await server.stop()


async def test_fresh_connection_closed_unanswered_is_not_retried(client: WebhookClient) -> None:
    async def hang_up(_: Seen) -> tuple[bytes, bool] | None:
        return None

    server, url = await serve(hang_up)
    try:
        with pytest.raises(ProtocolError, match="closed the connection before answering"):
            await client.post(url, b"{}", HEADERS)
        assert len(server.seen) == 1
    finally:
        await server.stop()


async def test_answer_cut_short_is_not_retried(client: WebhookClient) -> None:
    async def reply(seen: Seen) -> tuple[bytes, bool] | None:
        if seen.n == 0:
            return OK, False
        return b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab", True

    server, url = await serve(reply)
    try:
        assert (await client.post(url, b"1", HEADERS))[0] == 200
        with pytest.raises(ProtocolError, match="closed the connection during the answer") as e:
            await client.post(url, b"2", HEADERS)
        assert not e.value.unanswered
        assert [(s.conn, s.body) for s in server.seen] == [(0, b"1"), (0, b"2")]
    finally:
        await server.stop()


# ------------------------------------------------------------------ how an answer ends


async def test_chunked_answer_keeps_the_connection(client: WebhookClient) -> None:
    async def reply(_: Seen) -> tuple[bytes, bool] | None:
        chunks = b"4\r\nnope\r\n7\r\n, sorry\r\n0\r\n\r\n"
        return b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks, False

    server, url = await serve(reply)
    try:
        assert await client.post(url, b"1", HEADERS) == (500, "nope, sorry")
        assert await client.post(url, b"2", HEADERS) == (500, "nope, sorry")
        assert server.connections == 1
    finally:
        await server.stop()


async def test_connection_close_answer_is_not_reused(client: WebhookClient) -> None:
    async def reply(_: Seen) -> tuple[bytes, bool] | None:
        # the server keeps the connection open: only the header says not to reuse it
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False

    server, url = await serve(reply)
    try:
        assert await client.post(url, b"1", HEADERS) == (200, "ok")
        assert await client.post(url, b"2", HEADERS) == (200, "ok")
        assert [(s.conn, s.body) for s in server.seen] == [(0, b"1"), (1, b"2")]
    finally:
        await server.stop()


@pytest.mark.parametrize("version", [b"HTTP/1.1", b"HTTP/1.0"])
async def test_body_ending_with_the_connection(client: WebhookClient, version: bytes) -> None:
    async def reply(_: Seen) -> tuple[bytes, bool] | None:
        return version + b" 502 Bad Gateway\r\nContent-Type: text/plain\r\n\r\nupstream down", True

    server, url = await serve(reply)
    try:
        assert await client.post(url, b"1", HEADERS) == (502, "upstream down")
        assert await client.post(url, b"2", HEADERS) == (502, "upstream down")
        assert server.connections == 2
    finally:
        await server.stop()


async def test_informational_answer_is_skipped(client: WebhookClient) -> None:
    async def reply(_: Seen) -> tuple[bytes, bool] | None:
        early = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        return early + b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone", False

    server, url = await serve(reply)
    try:
        assert await client.post(url, b"1", HEADERS) == (201, "done")
        assert await client.post(url, b"2", HEADERS) == (201, "done")
        assert server.connections == 1
    finally:
        await server.stop()


async def test_redirect_is_not_followed(client: WebhookClient) -> None:
    async def reply(_: Seen) -> tuple[bytes, bool] | None:
        return b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n", False

    server, url = await serve(reply)
    try:
        assert await client.post(url, b"{}", HEADERS) == (302, "")
        assert [s.line for s in server.seen] == [b"POST /hook HTTP/1.1"]
    finally:
        await server.stop()


async def test_long_error_body_is_cut_to_200_bytes(client: WebhookClient) -> None:
    size = {"long": 150 * 1024, "short": 5 * 1024}

    async def reply(seen: Seen) -> tuple[bytes, bool] | None:
        body = b"e" * 150 + b"f" * (size[seen.body.decode()] - 150)
        return b"HTTP/1.1 500 X\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body), False

    server, url = await serve(reply)
    expected = (500, "e" * 150 + "f" * 50)
    try:
        assert await client.post(url, b"short", HEADERS) == expected
        assert await client.post(url, b"short", HEADERS) == expected
        assert server.connections == 1  # read whole, so reused
        assert await client.post(url, b"long", HEADERS) == expected
        assert await client.post(url, b"short", HEADERS) == expected
        assert server.connections == 2  # not worth reading to the end: closed
    finally:
        await server.stop()


async def test_an_answer_that_is_not_http(client: WebhookClient) -> None:
    async def reply(_: Seen) -> tuple[bytes, bool] | None:
        return b"SSH-2.0-OpenSSH_9.2\r\n\r\n", False

    server, url = await serve(reply)
    try:
        with pytest.raises(ProtocolError, match="answered something else than HTTP"):
            await client.post(url, b"{}", HEADERS)
    finally:
        await server.stop()


# ------------------------------------------------------------------ failures before an answer


async def test_timeout_on_a_server_that_never_answers() -> None:
    async def never(_: Seen) -> tuple[bytes, bool] | None:
        await asyncio.Event().wait()
        return None

    server, url = await serve(never)
    webhooks = WebhookClient(timeout=0.2)
    try:
        with pytest.raises(Timeout) as e:
            await webhooks.post(url, b"{}", HEADERS)
        assert str(e.value).startswith("no complete answer from 127.0.0.1:")
        assert str(e.value).endswith("within 0.2 s")
    finally:
        await webhooks.close()
        await server.stop()


async def test_connection_refused(client: WebhookClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectError) as e:
        await client.post(f"http://127.0.0.1:{port}/hook", b"{}", HEADERS)
    text = f"{type(e.value).__name__}: {e.value}"  # as a delivery's last_error shows it
    assert text.startswith(f"ConnectError: cannot connect to 127.0.0.1:{port}: ")
    assert "refused" in text.lower() or "failed" in text.lower()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/hook", "unsupported scheme 'ftp'"),
        ("http:///hook", "no host"),
        ("hook", "not an absolute http(s) URL"),
        ("http://example.com:99999/", "not a usable URL"),
        ("http://example.com:0/", "port 0"),
        ("http://exa mple.com/", "not a valid host name"),
        ("http://[::zz]/", "not a usable URL"),
    ],
)
async def test_unusable_urls(client: WebhookClient, url: str, reason: str) -> None:
    with pytest.raises(InvalidURL, match=reason.replace("(", r"\(").replace(")", r"\)")):
        await client.post(url, b"{}", HEADERS)


async def test_closing_the_client_fails_a_waiting_post() -> None:
    async def never(_: Seen) -> tuple[bytes, bool] | None:
        await asyncio.Event().wait()
        return None

    server, url = await serve(never)
    webhooks = WebhookClient(timeout=5)
    try:
        post = asyncio.create_task(webhooks.post(url, b"{}", HEADERS))
        await until(lambda: len(server.seen) == 1)
        await webhooks.close()
        with pytest.raises(ProtocolError, match="was closed"):
            await post
    finally:
        await server.stop()


# ------------------------------------------------------------------ addresses, credentials, TLS


async def test_ipv6_literal_and_a_dns_name(client: WebhookClient) -> None:
    server = RawServer(host="::1")
    try:
        port = await server.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert await client.post(f"http://[::1]:{port}/hook", b"{}", HEADERS) == (200, "ok")
        assert server.seen[0].headers[b"host"] == f"[::1]:{port}".encode()
    finally:
        await server.stop()
    server, url = await serve()
    try:
        named = url.replace("127.0.0.1", "localhost")  # resolved by the event loop
        assert await client.post(named, b"{}", HEADERS) == (200, "ok")
        assert server.seen[0].headers[b"host"] == named.split("/")[2].encode()
    finally:
        await server.stop()


async def test_credentials_in_the_url_become_basic_auth(client: WebhookClient) -> None:
    server, url = await serve()
    try:
        with_user = url.replace("http://", "http://hook%20user:p%40ss@")
        assert (await client.post(with_user, b"{}", HEADERS))[0] == 200
        expected = b"Basic " + base64.b64encode(b"hook user:p@ss")
        assert server.seen[0].headers[b"authorization"] == expected
    finally:
        await server.stop()


def make_ca(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A CA and a certificate it signs for 127.0.0.1 and localhost: (server, client) contexts."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tresen test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (tmp / "leaf.pem").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    (tmp / "leaf.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "leaf.pem", tmp / "leaf.key")
    client = ssl.create_default_context(cadata=ca.public_bytes(pem).decode())
    return server, client


async def test_https_with_a_test_ca(tmp_path: Path) -> None:
    server_tls, client_tls = make_ca(tmp_path)
    server = RawServer()
    port = await server.start(server_tls)
    trusting = WebhookClient(timeout=5, ssl_context=client_tls)
    system = WebhookClient(timeout=5)  # the system's CAs: ours is not among them
    try:
        for host in ("127.0.0.1", "localhost"):
            url = f"https://{host}:{port}/hook"
            assert await trusting.post(url, b"{}", HEADERS) == (200, "ok")
            assert await trusting.post(url, b"{}", HEADERS) == (200, "ok")
        assert server.connections == 2  # one per origin, each reused
        with pytest.raises(ConnectError, match=f"TLS with 127.0.0.1:{port}: .*certificate"):
            await system.post(f"https://127.0.0.1:{port}/hook", b"{}", HEADERS)
    finally:
        await trusting.close()
        await system.close()
        await server.stop()
