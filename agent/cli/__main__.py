"""``python -m agent.cli``: the ``arrears`` command."""

from agent.cli import main

main()
