"""Helpers for the end-to-end tests: processes, ports, payloads, an origin server, HTTP clients."""
