"""`python -m gateway`: the same as `syncgate gateway`."""

from syncgate.cli import cli

if __name__ == "__main__":
    cli(["gateway"])
