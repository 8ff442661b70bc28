#!/usr/bin/env python3
"""Publishes send requests (docs/queue.md) to NATS JetStream: N messages to
RECIPIENTS users, each acknowledged by the broker (stored) before this
exits. Creates the stream first if it does not exist, as the server would.
Needs nats-py (`pip install nats-py`). Prints one JSON line.

    python3 scripts/queue-publish.py --url nats://127.0.0.1:4222 --messages 100000
"""
import argparse
import asyncio
import json
import time

import nats
from nats.js.api import StreamConfig


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--stream", default="IM_SYSTEM")
    parser.add_argument("--subject", default="im.system.send")
    parser.add_argument("--prefix", default="b")
    args = parser.parse_args()
    nc = await nats.connect(args.url)
    js = nc.jetstream()
    try:
        await js.stream_info(args.stream)
    except nats.js.errors.NotFoundError:
        await js.add_stream(StreamConfig(name=args.stream, subjects=[args.subject]))
    started = time.monotonic()
    window = 1000
    for base in range(0, args.messages, window):
        acks = []
        for i in range(base, min(base + window, args.messages)):
            body = (f'{{"to_uid":{1 + i % args.recipients},"client_msg_id":"{args.prefix}{i}",'
                    f'"text":"your order {i} has shipped"}}').encode()
            acks.append(js.publish(args.subject, body))
        await asyncio.gather(*acks)
    took = time.monotonic() - started
    await nc.close()
    print(json.dumps({"published": args.messages, "secs": round(took, 2),
                      "per_sec": round(args.messages / took)}))


asyncio.run(main())
