"""The Ray Serve application (see serve/app.py); run from the repository root."""
