"""`python -m cli`: the `longjobs` command, where it is not installed as a script."""

from cli.main import app

app(prog_name="longjobs")
