"""`medimg-client`: the command-line client for sealed transfers.

    medimg-client --url https://medimg.example login --username tina [--otp 123456]
    medimg-client --url ... upload --patient MRN-0001 scan.png [--wait]
    medimg-client --url ... restore --scan 42 --out original.png [--format png]
    medimg-client --url ... logout

`login` asks for the password (or reads MEDIMG_PASSWORD) and keeps the JWT pair in a session
file readable by the user only (--session, default ~/.config/medimg-client/session.json).
Every `upload` and `restore` first runs a fresh key exchange (X25519 by default, --group
ffdhe3072 for classic Diffie-Hellman) whose session key lives only in this process: the file
goes up sealed (AES-256-GCM, X-Medimg-Seal header, and a fresh X-Medimg-Seal-Nonce bound into
the associated data so the server refuses a replay) and the restored image comes down sealed
and is opened here, so neither is readable by anything between the two ends, TLS aside.
The protocol (derivation, framing, associated data) is accounts.keyexchange; this module only
speaks HTTP with `requests`.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from accounts import keyexchange

SEAL_HEADER = "X-Medimg-Seal"
# Fresh for every sealed request and bound into its associated data: the server refuses a
# nonce it has seen with the key, so a captured request cannot be replayed.
SEAL_NONCE_HEADER = "X-Medimg-Seal-Nonce"
DEFAULT_SESSION = Path.home() / ".config" / "medimg-client" / "session.json"
TIMEOUT = 60


def new_nonce() -> str:
    return secrets.token_hex(16)


class ClientError(Exception):
    """A refusal or failure to report to the user (no traceback)."""


@dataclass(frozen=True)
class SessionKey:
    key_id: str
    key: bytes


def _error_text(response: requests.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} {response.reason}"


class Client:
    def __init__(self, base_url: str, session_file: Path) -> None:
        self.base_url = base_url.rstrip("/")
        self.session_file = session_file
        self.http = requests.Session()
        self.tokens: dict[str, str] = {}

    # --- tokens ----------------------------------------------------------------------------

    def _save_tokens(self) -> None:
        self.session_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Created 0600 before anything is written: tokens are credentials.
        fd = os.open(self.session_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"url": self.base_url, **self.tokens}, handle)

    def load_tokens(self) -> None:
        try:
            data = json.loads(self.session_file.read_text())
        except (OSError, ValueError):
            raise ClientError("Not logged in: run `medimg-client login` first.") from None
        if data.get("url") != self.base_url:
            raise ClientError(f"The session file is for {data.get('url')}, not {self.base_url}.")
        self.tokens = {"access": data["access"], "refresh": data["refresh"]}

    def login(self, username: str, password: str, otp: str | None = None) -> None:
        body = {"username": username, "password": password}
        if otp:
            body["otp"] = otp
        response = self.http.post(f"{self.base_url}/api/auth/token/", json=body, timeout=TIMEOUT)
        if response.status_code != 200:
            raise ClientError(f"Login refused: {_error_text(response)}")
        self.tokens = response.json()
        self._save_tokens()

    def logout(self) -> None:
        self.load_tokens()
        response = self.http.post(
            f"{self.base_url}/api/auth/logout/",
            json={"refresh": self.tokens["refresh"]},
            timeout=TIMEOUT,
        )
        self.session_file.unlink(missing_ok=True)
        if response.status_code not in (204, 401):
            raise ClientError(f"Logout failed: {_error_text(response)}")

    def _refresh(self) -> None:
        response = self.http.post(
            f"{self.base_url}/api/auth/token/refresh/",
            json={"refresh": self.tokens["refresh"]},
            timeout=TIMEOUT,
        )
        if response.status_code != 200:
            raise ClientError(f"Session expired, log in again ({_error_text(response)}).")
        self.tokens = response.json()
        self._save_tokens()

    def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> requests.Response:
        """An authenticated request; on a 401 the tokens are refreshed and it is tried once more
        (access tokens live 15 minutes, a long wait outlives one)."""
        for attempt in (0, 1):
            merged = {**(headers or {}), "Authorization": f"Bearer {self.tokens['access']}"}
            response = self.http.request(
                method, f"{self.base_url}{path}", headers=merged, timeout=TIMEOUT, **kwargs
            )
            if response.status_code != 401 or attempt:
                break
            self._refresh()
        return response

    # --- key exchange ----------------------------------------------------------------------

    def key_exchange(self, group: str = keyexchange.X25519) -> SessionKey:
        """Agree a session key with the server (accounts.keyexchange) and check the key id."""
        offer = self.request("GET", "/api/auth/key-exchange/", params={"group": group})
        if offer.status_code != 200:
            raise ClientError(f"Key exchange refused: {_error_text(offer)}")
        data = offer.json()
        server_public = keyexchange.b64decode_public_key(data["server_public_key"], group=group)
        own = keyexchange.generate_server_key(group)  # An ephemeral key pair, client side.
        secret = keyexchange.shared_secret(group, own.private, server_public)
        done = self.request(
            "POST",
            "/api/auth/key-exchange/",
            json={
                "exchange_id": data["exchange_id"],
                "public_key": keyexchange.b64encode(own.public),
            },
        )
        if done.status_code != 201:
            raise ClientError(f"Key exchange refused: {_error_text(done)}")
        user_id = self._me_id()
        key, key_id = keyexchange.derive_session_key(
            secret,
            group=group,
            user_id=user_id,
            exchange_id=data["exchange_id"],
            server_public=server_public,
            client_public=own.public,
        )
        if done.json()["key_id"] != key_id:
            raise ClientError("Key confirmation failed: the server derived a different key.")
        return SessionKey(key_id=key_id, key=key)

    def _me_id(self) -> int:
        # The user id is in the access token's claims; the token is ours, so no need to
        # verify its signature to read them.
        payload = self.tokens["access"].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return int(claims["user_id"])

    # --- transfers -------------------------------------------------------------------------

    def upload(self, *, patient: str, path: Path, group: str) -> list[dict[str, Any]]:
        session = self.key_exchange(group)
        name = path.name
        nonce = new_nonce()
        aad = keyexchange.transfer_aad("upload", patient=patient, name=name, nonce=nonce)
        sealed = keyexchange.seal(session.key, path.read_bytes(), key_id=session.key_id, aad=aad)
        response = self.request(
            "POST",
            f"/api/patients/{requests.utils.quote(patient, safe='')}/images/",
            files={"files": (name, sealed, "application/octet-stream")},
            headers={SEAL_HEADER: session.key_id, SEAL_NONCE_HEADER: nonce},
        )
        if response.status_code != 201:
            raise ClientError(f"Upload refused: {_error_text(response)}")
        return list(response.json())

    def wait(self, scan_id: int, *, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            response = self.request("GET", f"/api/images/{scan_id}/status/")
            if response.status_code != 200:
                raise ClientError(f"Status refused: {_error_text(response)}")
            status = response.json()["status"]
            if status in {"completed", "failed"}:
                return str(status)
            if time.monotonic() > deadline:
                raise ClientError(f"Scan {scan_id} still {status} after {timeout:.0f} s.")
            time.sleep(1)

    def restore(self, *, scan_id: int, out: Path, fmt: str, group: str) -> int:
        session = self.key_exchange(group)
        nonce = new_nonce()
        # A POST with a JSON body (the server refuses a GET with 405).
        response = self.request(
            "POST",
            f"/api/images/{scan_id}/restore/",
            json={"format": fmt},
            headers={SEAL_HEADER: session.key_id, SEAL_NONCE_HEADER: nonce},
        )
        if response.status_code != 200:
            raise ClientError(f"Restore refused: {_error_text(response)}")
        # The nonce is in the associated data: a sealed answer to another request won't open.
        aad = keyexchange.transfer_aad(
            "restore", scan=scan_id, format=fmt, frame=0, enhance=False, nonce=nonce
        )
        try:
            data = keyexchange.unseal(session.key, response.content, key_id=session.key_id, aad=aad)
        except keyexchange.SealError:
            raise ClientError("The restored image did not open: tampered or wrong key.") from None
        tmp = out.with_name(out.name + ".part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        tmp.replace(out)
        return len(data)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medimg-client", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("MEDIMG_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--session", type=Path, default=DEFAULT_SESSION, help="token file")
    parser.add_argument("--group", choices=keyexchange.GROUPS, default=keyexchange.X25519)
    commands = parser.add_subparsers(dest="command", required=True)

    login = commands.add_parser("login", help="log in and keep the tokens in the session file")
    login.add_argument("--username", required=True)
    login.add_argument("--otp", help="two-factor code, when the account has one")

    commands.add_parser("logout", help="end the login and delete the session file")

    upload = commands.add_parser("upload", help="upload an image sealed, optionally wait")
    upload.add_argument("--patient", required=True)
    upload.add_argument("--wait", action="store_true", help="wait until processing ends")
    upload.add_argument("--timeout", type=float, default=300)
    upload.add_argument("file", type=Path)

    restore = commands.add_parser("restore", help="download a restored original, sealed")
    restore.add_argument("--scan", type=int, required=True)
    restore.add_argument("--format", choices=("png", "jpeg", "dicom"), default="png")
    restore.add_argument("--out", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    client = Client(args.url, args.session)
    try:
        if args.command == "login":
            password = os.environ.get("MEDIMG_PASSWORD") or getpass.getpass("Password: ")
            client.login(args.username, password, args.otp)
            print(f"Logged in as {args.username}.")
        elif args.command == "logout":
            client.logout()
            print("Logged out.")
        elif args.command == "upload":
            client.load_tokens()
            scans = client.upload(patient=args.patient, path=args.file, group=args.group)
            for scan in scans:
                line = f"scan {scan['id']} {scan['status']}"
                if args.wait:
                    line = f"scan {scan['id']} {client.wait(scan['id'], timeout=args.timeout)}"
                print(line)
        elif args.command == "restore":
            client.load_tokens()
            size = client.restore(
                scan_id=args.scan, out=args.out, fmt=args.format, group=args.group
            )
            print(f"Wrote {size} bytes to {args.out}.")
    except ClientError as exc:
        print(f"medimg-client: {exc}", file=sys.stderr)
        return 1
    except requests.RequestException as exc:
        print(f"medimg-client: cannot reach {args.url}: {type(exc).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
