"""Helpers of the TLS tests: test CAs, a loopback DNS responder, Pebble, TLS probes, relay processes."""
