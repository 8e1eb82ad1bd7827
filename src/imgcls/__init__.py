"""imgcls: train image classifiers on a folder of photos from one YAML file.

The Python API (docs/python.md), the same as the commands:

    import imgcls
    run = imgcls.train("configs/digits.yaml", epochs=3)
    run.plot(); run.predict(["data/digits/3/"]); run.evaluate(); run.export("tflite")

`import imgcls` does not import TensorFlow; the first call that needs it does.
"""

from imgcls.api import Run, load_run, predict, runs, train
from imgcls.errors import ConfigError, ImgclsError

__version__ = "0.1.0"
__all__ = ["ConfigError", "ImgclsError", "Run", "__version__", "load_run", "predict", "runs", "train"]
