"""`python -m host_agent.cli`: the same as the `firstparty` command."""

import sys

from host_agent.cli.main import main

sys.exit(main())
