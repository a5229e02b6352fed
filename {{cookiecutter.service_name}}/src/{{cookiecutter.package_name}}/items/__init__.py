"""The items feature: a store with an outbox, HTTP routes, RPCs, an event stream (SSE) and the
consumer's effect (the service's own code, the example to copy for a domain of yours)."""
