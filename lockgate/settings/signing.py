"""The ``signing`` area: how committed artifacts are signed and whose signatures are trusted."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, model_validator

from lockgate.settings.base import Area


def default_key_folder() -> Path:
    """Where ``make setup`` puts the key pair: ``${XDG_CONFIG_HOME:-~/.config}/lockgate/signing``
    (outside every checkout, so no key is ever committed)."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(config) / "lockgate" / "signing"


class SigningSettings(Area):
    """How artifacts are signed when committed and verified where they cross a boundary (model-signing)."""

    # Signing never changes what a stage computes: no field enters a cache key.
    NOT_IN_RECIPE: ClassVar[frozenset[str]] = frozenset(
        {
            "method",
            "private_key",
            "private_key_password",
            "public_key",
            "certificate",
            "certificate_chain",
            "sigstore_identity",
            "sigstore_oidc_issuer",
            "sigstore_staging",
        }
    )

    method: Literal["key", "certificate", "sigstore"] = Field(
        default="key",
        description="'key': an elliptic-curve key pair (made by `make setup`). 'certificate': a private key with "
        "its signing certificate and chain (a company PKI). 'sigstore': Sigstore keyless signing (OIDC identity, "
        "needs the network).",
    )
    private_key: str = Field(
        default="",
        description="PEM private key that signs ('key', 'certificate'); empty: private-key.pem in the folder "
        "`make setup` writes (${XDG_CONFIG_HOME:-~/.config}/lockgate/signing). Keep it 0600, outside the checkout.",
    )
    private_key_password: SecretStr | None = Field(
        default=None, description="Password of an encrypted private key; none for an unencrypted one."
    )
    public_key: str = Field(
        default="",
        description="PEM public key signatures are verified with ('key'); empty: public-key.pem beside the "
        "default private key.",
    )
    certificate: str = Field(default="", description="PEM signing certificate ('certificate').")
    certificate_chain: tuple[str, ...] = Field(
        default=(), description="PEM certificates from the signing certificate up to a root you trust ('certificate')."
    )
    sigstore_identity: str = Field(
        default="", description="The identity (e-mail or workload URI) whose Sigstore signatures are trusted."
    )
    sigstore_oidc_issuer: str = Field(
        default="https://oauth2.sigstore.dev/auth", description="The OIDC issuer that vouches for that identity."
    )
    sigstore_staging: bool = Field(default=False, description="Use Sigstore's staging instance (tests of the setup).")

    @model_validator(mode="after")
    def _method_has_what_it_needs(self) -> SigningSettings:
        if self.method == "certificate" and not (self.private_key and self.certificate):
            raise ValueError("signing.method 'certificate' needs signing.private_key and signing.certificate")
        if self.method == "sigstore" and not self.sigstore_identity:
            raise ValueError("signing.method 'sigstore' needs signing.sigstore_identity (whose signatures to trust)")
        return self

    def private_key_path(self) -> Path:
        """The private key file (the setting, or the one ``make setup`` makes)."""
        return Path(self.private_key).expanduser() if self.private_key else default_key_folder() / "private-key.pem"

    def public_key_path(self) -> Path:
        """The public key file (the setting, or the one ``make setup`` makes)."""
        return Path(self.public_key).expanduser() if self.public_key else default_key_folder() / "public-key.pem"
