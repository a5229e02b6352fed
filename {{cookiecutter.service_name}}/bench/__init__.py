"""Benchmarks: the service against minimal baselines, ratios measured in one run (`make bench`)."""
