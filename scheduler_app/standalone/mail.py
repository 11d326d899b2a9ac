"""The standalone's SMTP sink: when no smtp_host is configured, mails land in a local Maildir.

An aiosmtpd server in the standalone process on a free loopback port; every mail it accepts is
written to ``<data-dir>/mail`` (a Maildir: one file per message under ``mail/new``), which any
mail client or ``python -m mailbox`` reads.
"""

from __future__ import annotations

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


def start_mail_sink(data_dir: Path) -> MailSink:
    """Start the sink; mails go to ``<data_dir>/mail``."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Mailbox

    maildir = data_dir / "mail"
    port = free_port()
    controller = Controller(Mailbox(maildir), hostname=HOST, port=port)
    controller.start()
    return MailSink(HOST, port, maildir, controller)
