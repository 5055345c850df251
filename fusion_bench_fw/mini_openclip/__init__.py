"""The offline mini OpenCLIP pool: mini-TA20's towers as task-vector checkpoints (see ``build.py``)."""
