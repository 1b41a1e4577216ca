"""``python -m relay_server`` is ``relay-server``."""

from relay_server.cli import main

main()
