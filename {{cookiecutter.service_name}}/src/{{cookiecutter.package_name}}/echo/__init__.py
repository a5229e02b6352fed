"""The echo feature: the drain demo over HTTP, gRPC and a WebSocket (the service's own code).

A reply after an optional, cancellable delay: a request with `delay_ms` is still running when
SIGTERM arrives, and must complete (or be cancelled and named at the deadline).
"""
