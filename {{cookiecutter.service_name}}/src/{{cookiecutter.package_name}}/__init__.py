"""The {{ cookiecutter.service_name }} service: HTTP, gRPC and workers under one root scope."""

DESCRIPTION = {{ cookiecutter.description | tojson }}
__version__ = "0.1.0"
