"""One class per API resource: builds the request model, calls the transport, structures
the response. No HTTP details here."""

from .flows import FlowPages, Flows

__all__ = ["FlowPages", "Flows"]
