"""A FastAPI app whose uvicorn workers share one Dots rate limit through Redis.

    pip install 'aiodots[redis]' fastapi uvicorn
    DOTS_CLIENT_ID=... DOTS_API_KEY=... DOTS_REDIS_URL=redis://127.0.0.1:6379/0 \\
    DOTS_RATE_LIMIT=150 uvicorn fastapi_shared_limit:app --app-dir examples --workers 4

Each worker is a process with its own `aiodots.Client` (one per event loop). Their
`RedisRateLimiter`s meet in Redis under the API key's hash, so the workers together never
start more than DOTS_RATE_LIMIT requests a second (leave it unset to let them find the
server's limit from 429s), and a 429 with Retry-After that one of them meets pauses all.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

import aiodots
from aiodots.contrib.redis import RedisRateLimiter


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    rate = os.environ.get("DOTS_RATE_LIMIT")
    limiter = RedisRateLimiter(
        os.environ["DOTS_REDIS_URL"], ceiling=float(rate) if rate else None
    )
    # Credentials and DOTS_BASE_URL from the environment; the client binds the limiter
    # to them, so other API keys on the same Redis keep limits of their own.
    async with limiter, aiodots.Client(rate_limiter=limiter) as dots:
        app.state.dots = dots
        yield


app = FastAPI(lifespan=lifespan)


class Onboard(BaseModel):
    user_id: str | None = None


@app.post("/onboard")
async def onboard(body: Onboard, request: Request) -> dict[str, str | int]:
    """Create an onboarding flow and return its link."""
    dots: aiodots.Client = request.app.state.dots
    try:
        flow = await dots.flows.create(steps=["compliance"], user_id=body.user_id)
    except aiodots.ValidationError as exc:
        raise HTTPException(422, str(exc)) from exc
    except aiodots.RateLimitError as exc:
        # Retries (and the shared pause) were not enough: tell the caller when to return.
        retry = f"{exc.retry_after:.0f}" if exc.retry_after else "1"
        raise HTTPException(503, "busy, try again", headers={"Retry-After": retry}) from exc
    except aiodots.DotsError as exc:
        raise HTTPException(502, f"Dots: {type(exc).__name__}") from exc
    return {"flow_id": flow.id, "link": flow.link, "worker": os.getpid()}
