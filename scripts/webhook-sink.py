#!/usr/bin/env python3
"""A webhook receiver for benchmarks and trying the outbox locally: answers
204 to every POST (keep-alive), checks each X-IM-Signature with the secret
in IM_WEBHOOK_SECRET (docs/webhook.md), counts requests, bad signatures and
distinct Idempotency-Keys, and answers GET /stats with those counts as JSON.
Standard library only.

    IM_WEBHOOK_SECRET=... python3 scripts/webhook-sink.py --port 9300
"""
import argparse
import asyncio
import hashlib
import hmac
import json
import os

stats = {"requests": 0, "bad_signatures": 0, "unique": 0}
seen = set()


def verify(secret, timestamp, signature, body):
    expected = hmac.new(secret, timestamp + b"." + body, hashlib.sha256).hexdigest()
    return signature.startswith(b"v1=") and hmac.compare_digest(expected.encode(), signature[3:])


async def connection(reader, writer, secret):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
            if lines[0].startswith(b"GET /stats"):
                answer = json.dumps(stats).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))
            else:
                stats["requests"] += 1
                if not verify(secret, headers.get(b"x-im-timestamp", b""),
                              headers.get(b"x-im-signature", b""), body):
                    stats["bad_signatures"] += 1
                key = headers.get(b"idempotency-key")
                if key not in seen:
                    seen.add(key)
                    stats["unique"] = len(seen)
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    secret = os.environ["IM_WEBHOOK_SECRET"].encode()
    server = await asyncio.start_server(
        lambda r, w: connection(r, w, secret), "127.0.0.1", args.port)
    async with server:
        await server.serve_forever()


asyncio.run(main())
