"""`imgcls serve`: a model behind HTTP (docs/serve.md).

    model.py     ServedModel: the model, its preprocessing, warm-up, metadata, Grad-CAM
    uploads.py   request content -> checked, decoded images, or a one-line 4xx
    batcher.py   requests arriving together -> one batch in the model's thread
    app.py       the Starlette app: the endpoints, the upload limit, one-line JSON errors
    server.py    uvicorn on a socket bound first; Ctrl-C / SIGTERM drain and exit 0
    page.html    the page at GET /: plain HTML and JavaScript, nothing fetched from elsewhere

Needs the extra: pip install 'imgcls[serve]' (Starlette, uvicorn, python-multipart).
"""

EXTRA = "pip install 'imgcls[serve]'"


def check_installed() -> None:
    """The server's packages, or one line naming the extra that brings them."""
    from importlib.util import find_spec

    from imgcls.errors import ImgclsError

    missing = [name for name, module in (("starlette", "starlette"), ("uvicorn", "uvicorn"),
                                         ("python-multipart", "python_multipart")) if find_spec(module) is None]
    if missing:
        raise ImgclsError(f"imgcls serve needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                          f"not installed here: {EXTRA}")
