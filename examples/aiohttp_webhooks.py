"""Receiving Dots webhooks on aiohttp.web.

    DOTS_WEBHOOK_SECRET=whsec_... python examples/aiohttp_webhooks.py --port 8080

Point the endpoint you add in Dots' Svix dashboard at `/webhooks/dots` on this server
(it listens on 127.0.0.1 unless given `--host`, so Svix reaches it through your proxy).
To try it without Dots, run the emulator and have it deliver here:

    emulator.webhooks.subscribe("http://127.0.0.1:8080/webhooks/dots", secret)
    emulator.complete_flow(flow_id)

Svix delivers each message at least once: after a timeout or any answer but a 2xx (the
400 for a delivery that does not verify included) it sends the same message again (same
`delivery_id`, new timestamp and signature), so the receiver below handles each
`delivery_id` once. In production keep that set in your database (a unique key), not in
memory.
"""

from __future__ import annotations

import argparse
import logging
import os

from aiohttp import web

from aiodots.webhooks import FlowEvent, TransferEvent, WebhookEvent, aiohttp_handler

log = logging.getLogger("webhooks")


class Receiver:
    """What this app does with an event, once per delivery id."""

    def __init__(self) -> None:
        self.events: list[WebhookEvent] = []
        self.duplicates = 0
        self._seen: set[str] = set()

    async def __call__(self, event: WebhookEvent) -> None:
        if event.delivery_id in self._seen:
            self.duplicates += 1  # a retry of a message already handled: answer 204 again
            return
        self._seen.add(event.delivery_id)
        try:
            await self.handle(event)
        except BaseException:
            # Not handled after all: let Svix's retry (after our 500) try again.
            self._seen.discard(event.delivery_id)
            raise
        self.events.append(event)

    async def handle(self, event: WebhookEvent) -> None:
        match event:
            case FlowEvent(flow_id=flow_id):
                log.info("flow %s changed (%s): fetch it to see its steps", flow_id, event.type)
            case TransferEvent(transfer_id=transfer_id, type="transfer.failed"):
                log.warning("transfer %s failed", transfer_id)
            case _:
                log.info("%s: %s", event.type, dict(event.data))


RECEIVER = web.AppKey("receiver", Receiver)


def make_app(secret: str) -> web.Application:
    """The app: one route that verifies deliveries (400 when they do not verify) and
    hands each event to a `Receiver`, kept as `app[RECEIVER]`."""
    app = web.Application()
    receiver = Receiver()
    app[RECEIVER] = receiver
    app.router.add_post("/webhooks/dots", aiohttp_handler(secret, receiver))
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="Receive Dots webhooks on aiohttp.web.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    # The secret comes from the environment, never a flag (it would land in shell history).
    web.run_app(make_app(os.environ["DOTS_WEBHOOK_SECRET"]), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
