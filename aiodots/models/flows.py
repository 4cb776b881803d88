"""Flows: hosted onboarding sequences (`/v2/flows`).

Request models (`CreateFlow`, `FlowStep`) validate on construction, so bad input fails
before anything is sent. The response model (`Flow`) accepts what the API returns,
including step names this version does not know yet.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import attrs

from aiodots.errors import ValidationError

from ._fields import json_value

__all__ = ["CreateFlow", "Flow", "FlowStep", "PayoutLinkStep", "RedirectStep", "Step"]


class Step(enum.StrEnum):
    """The documented step names. Responses may carry newer ones as plain strings."""

    COMPLIANCE = "compliance"
    ID_VERIFICATION = "id-verification"
    MANAGE_PAYOUTS = "manage-payouts"
    MANAGE_PAYMENTS = "manage-payments"
    PAYOUT = "payout"
    BACKGROUND_CHECK = "background-check"
    REDIRECT = "redirect"
    PDF_FORM_FILL = "pdf-form-fill"


_KNOWN_STEPS = ", ".join(s.value for s in Step)
#: Step by wire name: a dict lookup is much cheaper than `Step(name)` on hot paths.
STEP_BY_NAME: dict[str, Step] = {s.value: s for s in Step}
# The pattern Dots' OpenAPI document gives for `redirect_url`, anchored.
_REDIRECT_URL = re.compile(
    r"https?://(www\.)?[-a-zA-Z0-9@:%._+~#=]{1,256}\.[a-zA-Z0-9()]{1,6}\b"
    r"([-a-zA-Z0-9()@:%_+.~#?&/=]*)\Z"
)


def to_step(value: object) -> Step:
    if isinstance(value, Step):
        return value
    if isinstance(value, str):
        step = STEP_BY_NAME.get(value)
        if step is not None:
            return step
        raise ValidationError(f"unknown step {value!r}; known steps: {_KNOWN_STEPS}")
    raise ValidationError(f"a step name must be a string, not {type(value).__name__}")


def _optional_bool(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValidationError(f"{attribute.name} must be true or false, not {value!r}")


def _optional_text(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValidationError(f"{attribute.name} must be a non-empty string, not {value!r}")


def _check_redirect_url(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not _REDIRECT_URL.match(value):
        raise ValidationError(f"redirect_url must be an http or https URL, not {value!r}")


@attrs.frozen(slots=True)
class FlowStep:
    """A step with options, sent as `{"name": ..., ...}`. Unset options are not sent."""

    name: Step = attrs.field(converter=to_step)
    redirect_url: str | None = attrs.field(
        default=None, kw_only=True, validator=_check_redirect_url
    )
    template_id: str | None = attrs.field(default=None, kw_only=True, validator=_optional_text)
    auto_payout_enabled: bool | None = attrs.field(
        default=None, kw_only=True, validator=_optional_bool
    )
    hide_continue_button: bool | None = attrs.field(
        default=None, kw_only=True, validator=_optional_bool
    )

    def __attrs_post_init__(self) -> None:
        if self.name is Step.REDIRECT and self.redirect_url is None:
            raise ValidationError("a redirect step needs a redirect_url")


@attrs.frozen(slots=True)
class RedirectStep(FlowStep):
    """Shortcut for `FlowStep("redirect", redirect_url=...)`."""

    name: Step = attrs.field(default=Step.REDIRECT, init=False)
    redirect_url: str | None = attrs.field(kw_only=True, validator=_check_redirect_url)


@attrs.frozen(slots=True)
class PayoutLinkStep(FlowStep):
    """A step of a payout link's `additional_steps` with options: a flow step's, and those
    Dots' document gives payout links' steps alone. Unset options are not sent."""

    payment_intent_id: str | None = attrs.field(
        default=None, kw_only=True, validator=_optional_text
    )
    force: bool | None = attrs.field(default=None, kw_only=True, validator=_optional_bool)
    require_default_payout_method: bool | None = attrs.field(
        default=None, kw_only=True, validator=_optional_bool
    )
    require_auto_payout_method: bool | None = attrs.field(
        default=None, kw_only=True, validator=_optional_bool
    )
    payout_fee_party: str | None = attrs.field(
        default=None, kw_only=True, validator=_optional_text
    )


#: The options a step given as a mapping may use, by the class it becomes.
_OPTIONS_OF: dict[type[FlowStep], frozenset[str]] = {
    cls: frozenset(a.name for a in attrs.fields(cls)) for cls in (FlowStep, PayoutLinkStep)
}


def to_flow_step(value: object, step_class: type[FlowStep] = FlowStep) -> Step | FlowStep:
    """One item of `steps`: a name, a `Step`, a `FlowStep`, or a mapping of the fields of
    `step_class` (whose options a mapping may use)."""
    if type(value) is str:  # the common case first: ABC checks below cost more
        step = STEP_BY_NAME.get(value)
        if step is not None and step is not Step.REDIRECT:
            return step
    if isinstance(value, FlowStep):
        return value
    if isinstance(value, Mapping):
        unknown = set(value) - _OPTIONS_OF[step_class]
        if unknown:
            raise ValidationError(f"unknown step option(s): {', '.join(sorted(map(str, unknown)))}")
        if "name" not in value:
            raise ValidationError("a step given as a mapping needs a 'name'")
        options = dict(value)
        return step_class(options.pop("name"), **options)
    step = to_step(value)
    if step is Step.REDIRECT:
        raise ValidationError(
            "a redirect step needs a redirect_url: use RedirectStep(redirect_url=...)"
        )
    return step


def to_steps(
    value: object, step_class: type[FlowStep] = FlowStep, *, allow_empty: bool = False
) -> tuple[Step | FlowStep, ...]:
    if type(value) is not list and type(value) is not tuple and (
        isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable)
    ):
        raise ValidationError("steps must be a list of step names or FlowStep objects")
    steps = tuple([to_flow_step(v, step_class) for v in value])
    if not steps and not allow_empty:
        raise ValidationError("steps must not be empty")
    names = [step.name if isinstance(step, FlowStep) else step for step in steps]
    if len(set(names)) != len(names):
        seen: set[Step] = set()
        for name in names:
            if name in seen:
                raise ValidationError(f"step {name.value!r} appears more than once")
            seen.add(name)
    return steps


def to_optional_steps(value: object) -> tuple[Step | FlowStep, ...] | None:
    """`to_steps` for a field that may be left out."""
    return None if value is None else to_steps(value)


def to_payout_link_steps(value: object) -> tuple[Step | FlowStep, ...] | None:
    """A payout link's `additional_steps`: may be left out or empty (the document sets no
    minimum), and a step given as a mapping may use `PayoutLinkStep`'s options."""
    return None if value is None else to_steps(value, PayoutLinkStep, allow_empty=True)


def to_user_id(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        try:
            uuid.UUID(value)
        except ValueError:
            pass
        else:
            return value
    raise ValidationError(f"user_id must be a UUID, not {value!r}")


@attrs.frozen(slots=True, kw_only=True)
class CreateFlow:
    """The body of `POST /v2/flows`. Fields left as None are not sent."""

    steps: tuple[Step | FlowStep, ...] = attrs.field(converter=to_steps)
    user_id: str | None = attrs.field(default=None, converter=to_user_id)
    metadata: Mapping[str, Any] | str | None = attrs.field(
        default=None, validator=json_value(reserved=True)
    )
    require_auth: bool | None = attrs.field(default=None, validator=_optional_bool)
    hide_go_to_dashboard_on_complete: bool | None = attrs.field(
        default=None, validator=_optional_bool
    )

    @classmethod
    def from_mapping(cls, fields: Mapping[str, Any]) -> CreateFlow:
        """Build from a mapping with the same keys; unknown keys are an error, not ignored."""
        known = {a.name for a in attrs.fields(cls)}
        unknown = set(fields) - known
        if unknown:
            names = ", ".join(sorted(map(str, unknown)))  # a key may be any object
            raise ValidationError(f"unknown CreateFlow field(s): {names}")
        if "steps" not in fields:
            raise ValidationError("steps is required")
        return cls(**fields)

    @classmethod
    def coerce(cls, value: object) -> CreateFlow:
        """A `CreateFlow` as given, or one built from a mapping."""
        if isinstance(value, CreateFlow):
            return value
        if isinstance(value, Mapping):
            return cls.from_mapping(value)
        raise ValidationError(
            f"expected a CreateFlow or a mapping of its fields, not {type(value).__name__}"
        )


@attrs.frozen(slots=True, kw_only=True)
class Flow:
    """A flow as the API returns it. `created` is timezone-aware (UTC when the API gives
    no offset). Step names this version does not know stay plain strings."""

    id: str
    created: datetime
    link: str
    user_id: str | None = None
    steps: tuple[Step | str, ...] = ()
    completed_steps: tuple[Step | str, ...] = ()
    metadata: Mapping[str, Any] | str | None = None
