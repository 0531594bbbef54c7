from msearch.cli import app

app(prog_name="msearch")
