"""A CA and a server's keystore, made with the JDK's keytool: the TLS of HDFS's web servers
(flywheel/stack/hdfs_tls.py) and of Kafka's listeners (flywheel/stack/kafka_tls.py).

:func:`ensure` makes, once, in three folders of ``home`` (compose mounts each only where it is
needed):

- ``ca/ca.p12``: the CA's key;
- ``server/<alias>.p12``: the server's key, signed by the CA for its host names, and
  ``server/trust.p12``, the CA for Java clients;
- ``public/ca.pem``: the CA's certificate, what Python clients verify against.

The password reaches keytool through its environment (flywheel/stack/keytool.py), never a
command line. A change of host names makes a new server key under the same CA.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from flywheel.stack.base import StackError, write
from flywheel.stack.keytool import check_password, keytool, store, wrong_password


def san(names: list[str]) -> str:
    """keytool's SubjectAlternativeName extension for ``names`` (IP addresses and DNS names)."""
    def entry(name: str) -> str:
        try:
            ipaddress.ip_address(name)
            return f"IP:{name}"
        except ValueError:
            return f"DNS:{name}"
    return "SAN=" + ",".join(entry(n) for n in names)


@dataclass(frozen=True)
class ServerKeys:
    home: Path
    alias: str  # the server's key in its keystore, and the keystore's file name
    label: str  # who it is for, in messages: "HDFS", "Kafka"
    password: str
    source: str  # where the password comes from (flywheel.secrets.where), named in errors

    @property
    def ca_pem(self) -> Path:
        return self.home / "public" / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.home / "server" / f"{self.alias}.p12"

    @property
    def truststore(self) -> Path:
        return self.home / "server" / "trust.p12"

    def _keytool(self, *args: str, what: str) -> str:
        return keytool(self.password, *args, what=what, source=self.source)

    def ensure(self, names: list[str]) -> None:
        """The CA, the server keystore and the truststore, made when missing (or ``names``, the
        server's host names, changed); an existing keystore must open with the password."""
        check_password(self.password, self.source)
        ca_dir, server_dir = self.home / "ca", self.home / "server"
        for folder in (ca_dir, server_dir, self.ca_pem.parent):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        ca, server, trust, label, alias = ca_dir / "ca.p12", self.keystore, self.truststore, self.label, self.alias
        marker = server_dir / "hosts"
        if server.exists() and trust.exists() and self.ca_pem.exists() and marker.exists() \
                and marker.read_text() == "\n".join(names):
            try:  # all there (in compose, the server's container may hold no CA key): does it open?
                self._keytool("-list", *store(server), what=f"opening {label}'s keystore")
            except StackError as exc:
                if not wrong_password(exc):
                    raise
                raise StackError(f"{server} does not open with the keystore password ({self.source}): set that "
                                 f"password back, or delete {self.home} to make new keys (clients then verify "
                                 "against the new ca.pem)") from None
            return
        if not ca.exists():
            for stale in (server, trust, self.ca_pem):
                stale.unlink(missing_ok=True)
            self._keytool("-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048", "-validity", "3650",
                          "-dname", f"CN=Flywheel {label} CA", "-ext", "bc:c", *store(ca), what=f"making the {label} CA")
            os.chmod(ca, 0o600)
        if not self.ca_pem.exists():
            write(self.ca_pem, self._keytool("-exportcert", "-rfc", "-alias", "ca", *store(ca),
                                             what=f"exporting the {label} CA"))
        if not trust.exists():
            self._keytool("-importcert", "-noprompt", "-alias", "ca", "-file", str(self.ca_pem), *store(trust),
                          what=f"making {label}'s truststore")
        fresh = server_dir / f"{alias}.p12.new"
        fresh.unlink(missing_ok=True)
        self._keytool("-genkeypair", "-alias", alias, "-keyalg", "RSA", "-keysize", "2048", "-validity", "3650",
                      "-dname", f"CN={names[0]},O=Flywheel", *store(fresh), what=f"making {label}'s key")
        request = self._keytool("-certreq", "-alias", alias, *store(fresh), what=f"{label}'s certificate request")
        (server_dir / f"{alias}.csr").write_text(request)
        signed = self._keytool("-gencert", "-alias", "ca", *store(ca), "-infile", str(server_dir / f"{alias}.csr"),
                               "-rfc", "-validity", "3650", "-ext", san(names),
                               "-ext", "ku:c=digitalSignature,keyEncipherment", "-ext", "eku=serverAuth",
                               what=f"signing {label}'s certificate")
        (server_dir / f"{alias}.pem").write_text(signed)
        self._keytool("-importcert", "-noprompt", "-alias", "ca", "-file", str(self.ca_pem), *store(fresh),
                      what=f"adding the CA to {label}'s keystore")
        self._keytool("-importcert", "-alias", alias, "-file", str(server_dir / f"{alias}.pem"), *store(fresh),
                      what=f"adding {label}'s signed certificate")
        os.chmod(fresh, 0o600)
        os.replace(fresh, server)
        marker.write_text("\n".join(names))
