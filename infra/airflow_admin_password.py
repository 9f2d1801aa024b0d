"""Write the Airflow admin's password from the environment before the api-server starts.

Airflow 3's SimpleAuthManager (the auth manager this lock ships) reads each user's password from
a JSON file and *generates* a random one, printed to the log, for any user missing from it. So
that no password is generated, logged or kept in the image, the api-server's command runs this
first: it writes {AIRFLOW_ADMIN_USER: AIRFLOW_ADMIN_PASSWORD} to the file the auth manager reads
(AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE), readable by this user only, and replaces it
on every start, so changing the variable and restarting rotates the password.

    python infra/airflow_admin_password.py && exec airflow api-server
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

PASSWORDS_FILE_VAR = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
# Shorter than this is refused: the api-server is the door to every DAG and connection.
MIN_PASSWORD_CHARS = 12


def write_passwords_file(environ: dict[str, str]) -> Path:
    user = environ.get("AIRFLOW_ADMIN_USER", "").strip()
    password = environ.get("AIRFLOW_ADMIN_PASSWORD", "")
    target = environ.get(PASSWORDS_FILE_VAR, "").strip()
    if not user:
        raise SystemExit("AIRFLOW_ADMIN_USER is empty: set it in infra/.env (see infra/.env.example).")
    if len(password) < MIN_PASSWORD_CHARS:
        raise SystemExit(
            f"AIRFLOW_ADMIN_PASSWORD is shorter than {MIN_PASSWORD_CHARS} characters: "
            "generate one with `openssl rand -hex 24` and set it in infra/.env."
        )
    if not target:
        raise SystemExit(f"{PASSWORDS_FILE_VAR} is not set: it names the file SimpleAuthManager reads.")
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 before anything is written, so the password is never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps({user: password}) + "\n")
    os.chmod(path, 0o600)
    return path


if __name__ == "__main__":
    written = write_passwords_file(dict(os.environ))
    print(f"Airflow admin password set in {written}", file=sys.stderr)
