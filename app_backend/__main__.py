"""``python -m app_backend``: run the demo application configured by the environment.

This is the container's command; see :func:`app_backend.server.main` for the exit codes
(0 after SIGTERM/SIGINT, 1 if the port cannot be bound, 2 for an invalid setting).
"""

from app_backend.server import main

if __name__ == "__main__":
    raise SystemExit(main())
