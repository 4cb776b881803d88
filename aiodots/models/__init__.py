"""attrs models, one module per API resource. Plain data: no I/O and no JSON here."""

from .common import Page
from .flows import CreateFlow, Flow, FlowStep, RedirectStep, Step

__all__ = ["CreateFlow", "Flow", "FlowStep", "Page", "RedirectStep", "Step"]
