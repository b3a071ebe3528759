"""`python -m consumers`: the same as `syncgate consumer`."""

from syncgate.cli import cli

if __name__ == "__main__":
    cli(["consumer"])
