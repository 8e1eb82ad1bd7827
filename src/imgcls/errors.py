"""The one exception type a user sees.

Anything the user can fix (a typo in a config key, a missing folder, a file
that is not an image) is raised as `ImgclsError` with a message that names the
file or key and says how to fix it. The CLI prints it as one line and exits
with code 2; every other exception is a bug in imgcls and keeps its traceback.
"""


class ImgclsError(Exception):
    """A problem in the user's input, explained in one line."""
