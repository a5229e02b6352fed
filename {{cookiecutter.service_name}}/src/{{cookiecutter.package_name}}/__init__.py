"""The service: HTTP, gRPC and workers under one root scope (see README.md)."""

__version__ = "0.1.0"
