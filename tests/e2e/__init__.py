"""End-to-end tests: real relay, agent and origin processes talking over 127.0.0.1."""
