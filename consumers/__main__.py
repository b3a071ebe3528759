"""`python -m consumers`: the same as `syncgate consumer`."""

from cli.main import cli

if __name__ == "__main__":
    cli(["consumer"])
