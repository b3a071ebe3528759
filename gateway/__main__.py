"""`python -m gateway`: the same as `syncgate gateway`."""

from cli.main import cli

if __name__ == "__main__":
    cli(["gateway"])
