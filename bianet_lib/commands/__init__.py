"""Sub-commands of ``bianet`` (see bianet_lib.cli)."""
