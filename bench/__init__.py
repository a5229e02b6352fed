"""The template's benchmark driver: bake the default service and run its `make bench`."""
