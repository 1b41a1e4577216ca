"""Streaming end-to-end tests: websockets, unbuffered bodies, flow control, aborts and limits through real processes."""
