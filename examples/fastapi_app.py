"""A FastAPI app that uses Dots both ways: it creates onboarding flows through one
`aiodots.Client`, opened in the app's lifespan, and receives Dots' webhooks.

    export DOTS_CLIENT_ID=... DOTS_API_KEY=... DOTS_WEBHOOK_SECRET=whsec_...
    uvicorn examples.fastapi_app:app --port 8000

    curl -X POST localhost:8000/flows -H 'content-type: application/json' \\
         -d '{"steps": ["compliance"]}'

Webhooks arrive at `POST /webhooks/dots`. The handler verifies the raw body (bytes as
received: JSON parsed and serialised again no longer matches the signature), answers
400 when it does not verify, and handles each `delivery_id` once, since Svix delivers a
message again after a timeout or any answer but a 2xx. Dots' payloads carry only ids, so a
`flow.updated` is followed by a fetch of the flow through the same client.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from pydantic import BaseModel

import aiodots
from aiodots.webhooks import FlowEvent, WebhookEvent

log = logging.getLogger("dots-app")


class NewFlow(BaseModel):
    steps: list[str] = ["compliance"]
    user_id: str | None = None


class CreatedFlow(BaseModel):
    id: str
    link: str


class Services:
    """What the app's handlers share: the Dots client (open while the app runs), the
    webhook secret, and what the webhooks told us."""

    def __init__(self) -> None:
        self._dots: aiodots.Client | None = None
        self.webhook_secret = ""
        self.events: list[WebhookEvent] = []
        #: flow id -> its completed steps, fetched after each flow.updated
        self.completed_steps: dict[str, list[str]] = {}
        self.duplicates = 0
        #: delivery ids already handled (in production: a unique key in your database)
        self.seen: set[str] = set()

    @property
    def dots(self) -> aiodots.Client:
        if self._dots is None:
            raise RuntimeError("the Dots client opens with the app's lifespan")
        return self._dots


def create_app(*, webhook_secret: str | None = None, **client_options: Any) -> FastAPI:
    """The app. `client_options` go to `aiodots.Client` (credentials, `base_url`, ...);
    without them it reads `DOTS_CLIENT_ID` / `DOTS_API_KEY` / `DOTS_BASE_URL`, and the
    secret `DOTS_WEBHOOK_SECRET`, when the app starts."""
    services = Services()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services.webhook_secret = webhook_secret or os.environ["DOTS_WEBHOOK_SECRET"]
        # One client for the whole app: one connection pool, one rate limiter.
        async with aiodots.Client(**client_options) as dots:
            services._dots = dots
            try:
                yield
            finally:
                services._dots = None

    app = FastAPI(lifespan=lifespan)
    app.state.services = services

    @app.post("/flows", status_code=201)
    async def create_flow(new: NewFlow) -> CreatedFlow:
        try:
            flow = await services.dots.flows.create(steps=new.steps, user_id=new.user_id)
        except aiodots.ValidationError as exc:
            raise HTTPException(422, str(exc)) from None
        except aiodots.DotsError as exc:
            raise HTTPException(502, f"Dots: {exc}") from None
        return CreatedFlow(id=flow.id, link=flow.link)

    @app.post("/webhooks/dots", status_code=204)
    async def dots_webhook(request: Request) -> Response:
        body = await request.body()
        try:
            event = aiodots.webhooks.verify(body, request.headers, services.webhook_secret)
        except aiodots.WebhookVerificationError as exc:
            raise HTTPException(400, str(exc)) from None
        if event.delivery_id in services.seen:
            services.duplicates += 1
            return Response(status_code=204)
        services.seen.add(event.delivery_id)
        try:
            await handle(event)
        except BaseException:
            services.seen.discard(event.delivery_id)  # a 500: Svix will try again
            raise
        return Response(status_code=204)

    async def handle(event: WebhookEvent) -> None:
        services.events.append(event)
        if isinstance(event, FlowEvent):
            flow = await services.dots.flows.retrieve(event.flow_id)
            services.completed_steps[flow.id] = [str(s) for s in flow.completed_steps]
            log.info("flow %s: completed %s", flow.id, services.completed_steps[flow.id])

    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
