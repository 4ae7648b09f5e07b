"""The extension's per-app state (gpufs.State), found at app.extensions["gpufs"]."""
from flask import current_app


def state(app=None):
    return (app or current_app).extensions["gpufs"]
