"""One module per ``pnerf`` subcommand (see pnerf_fast/cli.py)."""
