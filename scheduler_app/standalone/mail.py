"""The standalone's SMTP sink: when no smtp_host is configured, mails land in a local Maildir.

An aiosmtpd server in the standalone process on a free loopback port; every mail it accepts is
written to ``<data-dir>/mail`` (a Maildir: one file per message under ``mail/new``), which any
mail client or ``python -m mailbox`` reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from scheduler_app.standalone.embedded import free_port

HOST = "127.0.0.1"


@dataclass
class MailSink:
    """A running sink: where it listens and where its mails are."""

    host: str
    port: int
    maildir: Path
    controller: object

    def stop(self) -> None:
        self.controller.stop()


def _private_mailbox(maildir: Path):
    """aiosmtpd's Maildir handler, its message files 0600 like the rest of the data dir (the
    Maildir's directories are 0700 already; its files follow the umask)."""
    from aiosmtpd.handlers import Mailbox

    class PrivateMailbox(Mailbox):
        def handle_message(self, message) -> None:
            key = self.mailbox.add(message)
            os.chmod(os.path.join(self.mail_dir, self.mailbox._lookup(key)), 0o600)

    return PrivateMailbox(maildir)


def start_mail_sink(data_dir: Path) -> MailSink:
    """Start the sink; mails go to ``<data_dir>/mail``."""
    from aiosmtpd.controller import Controller

    maildir = data_dir / "mail"
    port = free_port()
    controller = Controller(_private_mailbox(maildir), hostname=HOST, port=port)
    controller.start()
    return MailSink(HOST, port, maildir, controller)
