"""The privileged channel of the Whatsminer API v2: tokens, the md5-crypt key, AES envelopes.

How the firmware does it (Whatsminer API v2.0.5 manual; pyasic 0.79.0's client in
``pyasic/rpc/btminer.py`` is the other end):

- The admin password is stored as an md5-crypt hash whose salt is fixed per device: that salt is
  the ``salt`` of every token. The hash part is the shared ``key`` and ``sha256(key)`` the
  AES-256 key, so a client proves it knows the password without ever sending it.
- ``get_token`` hands out ``time`` (four digits) and a fresh ``newsalt``. The client signs with
  ``sign = md5-crypt(key + time, newsalt)`` and puts it in the ciphertext as ``token``.
- The request carries only the sign, so the firmware must remember what it issued: one client
  holds at most 32 live tokens, each lives 30 minutes, and a reboot forgets them all.
- A privileged request is ``{"enc": 1, "data": base64(AES-256-ECB(json, zero padded))}`` and its
  reply ``{"enc": base64(AES-256-ECB(json, zero padded))}``.

Simplification: the firmware counts tokens per client IP (16 clients of 32 tokens); here one
pool of 32 serves every client, which is the same thing for one controller per miner.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import random
import string
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from passlib.handlers.md5_crypt import md5_crypt

from .physics import Clock

TOKEN_LIFETIME_S = 30 * 60.0
MAX_LIVE_TOKENS = 32
AES_BLOCK_BYTES = 16
# md5-crypt salts are up to 8 characters of this alphabet.
SALT_ALPHABET = string.ascii_letters + string.digits + "./"

# Message codes of the Whatsminer API v2 (manual, "Message Code").
CODE_TOKEN_CHECK_FAILED = 135
CODE_TOKEN_OVER_MAX = 136
CODE_BASE64_DECODE_FAILED = 137


class PrivilegeError(Exception):
    """A privileged request the firmware turns away, with the code and message it answers."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Token:
    """What ``get_token`` answers in its ``Msg``."""

    time: str
    salt: str
    newsalt: str

    def as_msg(self) -> dict[str, str]:
        return {"time": self.time, "salt": self.salt, "newsalt": self.newsalt}


def md5_crypt_digest(word: str, salt: str) -> str:
    """The hash part of ``$1$salt$hash``, as ``openssl passwd -1 -salt salt word`` prints it."""
    return str(md5_crypt.using(salt=salt).hash(word)).split("$")[3]


class PrivilegedChannel:
    """Issues tokens, opens encrypted requests that carry a live one, seals the replies."""

    def __init__(self, password: str, *, rng: random.Random, clock: Clock) -> None:
        self._rng = rng
        self._clock = clock
        self.salt = self._random_salt()
        self._key = md5_crypt_digest(password, self.salt)
        self._cipher = Cipher(algorithms.AES(hashlib.sha256(self._key.encode()).digest()), modes.ECB())
        self._issued_at: dict[str, float] = {}  # sign -> when it was issued, oldest first

    def issue_token(self) -> Token:
        """A fresh token; refused with code 136 while the client holds the maximum."""
        self._drop_expired()
        if len(self._issued_at) >= MAX_LIVE_TOKENS:
            raise PrivilegeError(CODE_TOKEN_OVER_MAX, "token over max times")
        token = Token(time=f"{int(self._clock()) % 10_000:04d}", salt=self.salt, newsalt=self._random_salt())
        sign = md5_crypt_digest(self._key + token.time, token.newsalt)
        self._issued_at[sign] = self._clock()
        return token

    def open(self, data: str) -> dict[str, Any]:
        """Decrypt a request's ``data`` and check its token; raises :class:`PrivilegeError`."""
        try:
            ciphertext = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PrivilegeError(CODE_BASE64_DECODE_FAILED, "base64 decode err") from exc
        request = self._decrypt(ciphertext)
        self._drop_expired()
        # A wrong password gives a wrong AES key, so the plaintext is noise and no token can be
        # read from it: to the firmware that is the same failure as a forged or expired sign.
        if request is None or request.get("token") not in self._issued_at:
            raise PrivilegeError(CODE_TOKEN_CHECK_FAILED, "check token err")
        return request

    def seal(self, reply: dict[str, Any]) -> dict[str, str]:
        """The encrypted envelope a privileged reply travels in."""
        plaintext = json.dumps(reply).encode()
        padding = -len(plaintext) % AES_BLOCK_BYTES
        encryptor = self._cipher.encryptor()
        ciphertext = encryptor.update(plaintext + b"\0" * padding) + encryptor.finalize()
        return {"enc": base64.b64encode(ciphertext).decode("ascii")}

    def forget_tokens(self) -> None:
        """What a reboot does: every issued token dies with the process that kept it."""
        self._issued_at.clear()

    @property
    def live_tokens(self) -> int:
        self._drop_expired()
        return len(self._issued_at)

    # -- internals ------------------------------------------------------------------------------

    def _decrypt(self, ciphertext: bytes) -> dict[str, Any] | None:
        if not ciphertext or len(ciphertext) % AES_BLOCK_BYTES:
            return None
        decryptor = self._cipher.decryptor()
        plaintext = decryptor.update(ciphertext) + decryptor.finalize()
        try:
            decoded = json.loads(plaintext.rstrip(b"\0").decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        return decoded if isinstance(decoded, dict) else None

    def _drop_expired(self) -> None:
        oldest_alive = self._clock() - TOKEN_LIFETIME_S
        for sign, issued_at in list(self._issued_at.items()):
            if issued_at < oldest_alive:
                del self._issued_at[sign]

    def _random_salt(self) -> str:
        return "".join(self._rng.choice(SALT_ALPHABET) for _ in range(8))
