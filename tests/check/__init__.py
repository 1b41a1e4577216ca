"""`relay-client check`: validators without sockets, and end-to-end runs through a real relay and agent."""
