"""Link passwords: strength rules and Argon2id hashing."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 8
MAX_LENGTH = 200

# Passwords that appear at the top of public leaked-password frequency lists.
COMMON_PASSWORDS = frozenset(
    {
        "password", "password1", "password12", "password123", "passw0rd", "p@ssw0rd",
        "12345678", "123456789", "1234567890", "87654321", "11111111", "00000000",
        "qwertyuiop", "qwerty123", "qwerty12", "1q2w3e4r", "1q2w3e4r5t", "abc12345",
        "abcd1234", "abcdefgh", "iloveyou", "sunshine", "princess", "football",
        "baseball", "welcome1", "welcome123", "letmein1", "trustno1", "superman",
        "starwars", "whatever", "computer", "internet", "changeme", "admin123",
        "administrator", "secret123", "monkey123", "dragon123", "master123",
        "asdfghjk", "asdfasdf", "zxcvbnm1", "q1w2e3r4", "aa123456", "12341234",
        "11223344", "123123123", "iloveyou1", "football1", "michelle", "jennifer",
    }
)  # fmt: skip

_hasher = PasswordHasher()


def password_problem(password: str) -> str | None:
    """Return why a password is too weak for a link, or None when it is acceptable."""
    if len(password) < MIN_LENGTH:
        return f"password is too short: use at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"password is too long: use at most {MAX_LENGTH} characters"
    if len(set(password)) == 1:
        return "password is too weak: it repeats one character"
    if password.lower() in COMMON_PASSWORDS:
        return "password is too weak: it is a commonly used password"
    return None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
