"""The `syncgate` command: one subcommand per job, calling the processes' entry points."""
