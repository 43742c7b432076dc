"""ed25519 keys and signatures over manifest.json that plain openssl can check::

    openssl pkeyutl -verify -pubin -inkey signing.pub.pem -rawin \\
        -in manifest.json -sigfile manifest.sig
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from offline.errors import ConfigError, IntegrityError, NotFoundError
from offline.fsutil import atomic_write_bytes


def public_key_path(private_key: Path) -> Path:
    """``keys/x.pem`` → ``keys/x.pub.pem``."""
    return private_key.with_name(private_key.name.removesuffix(".pem") + ".pub.pem")


def keygen(private_key: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new ed25519 key pair: the private key 0600, the public key next to it."""
    pub_path = public_key_path(private_key)
    if private_key.exists() and not overwrite:
        raise ConfigError(
            f"{private_key} already exists; refusing to overwrite a signing key",
            fix="choose another --out, or pass --force if you really mean to replace it",
        )
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write_bytes(private_key, pem, mode=0o600)
    atomic_write_bytes(pub_path, public_pem(key.public_key()))
    return private_key, pub_path


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    if not path.is_file():
        raise NotFoundError(
            f"signing key {path} not found", fix=f"create one: offline bundle keygen --out {path}"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"{path} is not an ed25519 key", fix="create one: offline bundle keygen --out NEW.pem"
        )
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    if not path.is_file():
        raise NotFoundError(f"public key {path} not found")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an ed25519 public key")
    return key


def sign(data: bytes, key: Ed25519PrivateKey) -> bytes:
    """A raw 64-byte ed25519 signature (what ``openssl pkeyutl -sign -rawin`` writes)."""
    return key.sign(data)


def verify(data: bytes, signature: bytes, key: Ed25519PublicKey, *, what: str) -> None:
    try:
        key.verify(signature, data)
    except InvalidSignature as exc:
        raise IntegrityError(
            f"{what}: the signature does not match (the file was changed or signed by another key)",
            fix="get the bundle again from its source and check it with the trusted public key",
        ) from exc
