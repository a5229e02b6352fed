"""Generated gRPC stubs (built from proto/ by the install step, see hatch_build.py)."""
