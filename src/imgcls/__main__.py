from imgcls.cli import app

app(prog_name="imgcls")
