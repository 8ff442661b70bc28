#!/usr/bin/env python3
"""Closed-loop load on the business API's send: CONNS keep-alive HTTP/1.1
connections, each sending POST /v1/messages (or /v1/messages/batch with
--batch N) from the system account, a new client_msg_id each time, and
waiting for the answer before the next. Standard library only.

Prints one JSON line: requests and messages per second, latency
percentiles (from writing a request to reading its whole answer), and how
many answers were not 200 (any makes the exit status 1).
"""
import argparse
import asyncio
import json
import multiprocessing
import os
import time


async def connection(i, args, latencies, failures, deadline):
    reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
    n = 0
    while time.monotonic() < deadline:
        n += 1
        cmid = f"l{os.getpid()}-{i}-{n}"
        first = (n * 7919 + i * 104729) % args.recipients
        # Formatted by hand: json.dumps costs the client more than the server.
        if args.batch == 1:
            path = "/v1/messages"
            body = f'{{"to_uid":{1 + first},"client_msg_id":"{cmid}","text":"order 12345 shipped"}}'
        else:
            path = "/v1/messages/batch"
            to = ",".join(str(1 + (first + k) % args.recipients) for k in range(args.batch))
            body = f'{{"to_uids":[{to}],"client_msg_id":"{cmid}","text":"sale starts now"}}'
        payload = body.encode()
        request = (
            f"POST {path} HTTP/1.1\r\nHost: im\r\nAuthorization: Bearer {args.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        started = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        answer = await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        if not head.startswith(b"HTTP/1.1 200") or b'"error"' in answer:
            failures.append(head.split(b"\r\n", 1)[0].decode() + " " + answer[:200].decode())
    writer.close()


async def run(args, first, count):
    latencies, failures = [], []
    deadline = time.monotonic() + args.secs
    await asyncio.gather(
        *(connection(i, args, latencies, failures, deadline) for i in range(first, first + count))
    )
    return latencies, failures


def process(job):
    args, first, count = job
    return asyncio.run(run(args, first, count))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--conns", type=int, default=32)
    parser.add_argument("--secs", type=float, default=10)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--recipients", type=int, default=10000)
    parser.add_argument("--procs", type=int, default=1,
                        help="client processes (one Python process saturates a core)")
    args = parser.parse_args()
    share = [args.conns // args.procs + (p < args.conns % args.procs) for p in range(args.procs)]
    jobs = [(args, sum(share[:p]), share[p]) for p in range(args.procs) if share[p]]
    started = time.monotonic()
    with multiprocessing.Pool(len(jobs)) as pool:
        results = pool.map(process, jobs)
    took = time.monotonic() - started
    latencies = [l for result in results for l in result[0]]
    failures = [f for result in results for f in result[1]]
    latencies.sort()
    n = len(latencies)
    pct = lambda p: round(latencies[min(n - 1, int(n * p / 100))] * 1000, 2)
    print(json.dumps({
        "conns": args.conns, "batch": args.batch, "requests": n,
        "requests_per_sec": round(n / took), "messages_per_sec": round(n * args.batch / took),
        "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "p999_ms": pct(99.9),
        "max_ms": round(latencies[-1] * 1000, 2), "failures": len(failures),
    }))
    for failure in failures[:5]:
        print("not 200:", failure)
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
