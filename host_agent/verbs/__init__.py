"""The agent's command-line verbs, one module each (registered in host_agent.cli.SUBCOMMANDS)."""
