# bassray's cluster image: Ray's official image of the pinned Ray version (Python 3.11, CUDA) with
# bassray installed from this checkout, so no job or replica installs anything at run time.
#
#   docker build -t registry.example.com/you/bassray:0.1.0-ray2.60.0 .
#   docker push registry.example.com/you/bassray:0.1.0-ray2.60.0
#
# registry.example.com/you/ is a placeholder for your registry: cluster/ names the image this way.
# tests/test_cluster_configs.py keeps the Ray version here equal to pyproject.toml's pin, and CI runs
# the install line below in a fresh venv.
ARG RAY_VERSION=2.60.0
FROM rayproject/ray:${RAY_VERSION}-py311-gpu

WORKDIR /home/ray/bassray
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users bassray ./bassray
COPY --chown=ray:users jobs ./jobs
COPY --chown=ray:users serve ./serve
# install: the project and its pinned dependencies (torch's CUDA build comes from PyPI).
RUN python -m pip install --no-cache-dir .
