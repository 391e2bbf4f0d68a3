"""``python -m viewerkit.sandbox serve ...``: the sandbox CLI without the top-level command."""

from viewerkit.sandbox.cli import sandbox

if __name__ == "__main__":
    sandbox(prog_name="python -m viewerkit.sandbox")
