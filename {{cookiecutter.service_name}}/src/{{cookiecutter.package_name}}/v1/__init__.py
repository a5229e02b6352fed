"""Generated gRPC stubs for {{ cookiecutter.package_name }}.v1 (built from proto/ at install)."""
