"""Runs: the folder a training writes and everything else reads. No TensorFlow.

    layout.py      file names, creating and finding run folders, reading their files (contract: docs/runs.md)
    status.py      best epoch, running / finished / failed, the rows of `imgcls runs`
    provenance.py  what a run records about how it was made: versions, command, devices, data commit
    resume.py      may a run continue (`train --resume`), with which config
"""
