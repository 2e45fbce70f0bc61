"""`mail://host:port/to@example.com` (or `smtp://`): one mail per event, sent with smtplib.

Query keys: `username`, `password`, `from` (default: MAIL_FROM, else the username when it is an address, as
Dewy, else dewy@<host>), `subject` (the whole subject, as Dewy; without it `[app] deployed 1.2.3`), `tls`
(default true), `quiet`. `MAIL_USERNAME`, `MAIL_PASSWORD` and `MAIL_FROM` in the environment fill in what the URL leaves
out (keep the password there, not in a world-readable ini). The port defaults to 587 (submission) with
STARTTLS; port 465 speaks TLS from the first byte; `tls=false` sends in plaintext and never upgrades
(for a relay on localhost). Certificates are verified against the system CAs. Several recipients are
separated by commas in the path.
"""

import os
import smtplib
import ssl
import urllib.parse
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from dewy import audit, urls
from dewy.notify.base import Notifier, NotifyError
from dewy.notify.events import Event

DEFAULT_PORT = 587
IMPLICIT_TLS_PORT = 465


class MailNotifier(Notifier):
    """Sends each event as a plain-text mail through an SMTP server."""

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError without a host or a recipient, or with a bad boolean."""
        if not parsed.hostname:
            raise ValueError("%s notifier needs a server: %s://host:port/to@example.com"
                             % (parsed.scheme, parsed.scheme))
        parsed.port  # noqa: B018 - a bad port raises ValueError here
        if "@" not in parsed.path:
            raise ValueError("%s notifier needs a recipient: %s://host:port/to@example.com"
                             % (parsed.scheme, parsed.scheme))
        for key in ("tls", "quiet"):
            urls.query_bool(parsed, key)

    def __init__(self, url: str):
        super().__init__(url)
        self.validate(self.parsed)
        query = self.parsed.query
        self.host = self.parsed.hostname
        self.tls = urls.query_bool(self.parsed, "tls", default=True)
        self.port = self.parsed.port or DEFAULT_PORT
        if not self.tls:
            from dewy.notify.base import log
            log.warning("notifier %s: tls=false: mail (and the login) go in plaintext, the server is NOT "
                        "authenticated", self.describe())
        self.recipients = [r.strip() for r in self.parsed.path.strip("/").split(",") if r.strip()]
        userinfo = urllib.parse.urlsplit("//" + self.parsed.netloc)  # mail://user:password@host also works
        self.username = (query.get("username") or urllib.parse.unquote(userinfo.username or "")
                         or os.environ.get("MAIL_USERNAME", ""))
        self.password = (query.get("password") or urllib.parse.unquote(userinfo.password or "")
                         or os.environ.get("MAIL_PASSWORD", ""))
        self.sender = (query.get("from") or os.environ.get("MAIL_FROM", "")
                       or (self.username if "@" in self.username else "") or "dewy@%s" % audit.hostname())
        self.subject = query.get("subject") or ""  # Dewy's meaning: the whole subject of every mail

    def describe(self) -> str:
        """mail://host:port (no recipients, no credentials)."""
        return "%s://%s:%d" % (self.parsed.scheme, self.host, self.port)

    def message(self, event: Event) -> EmailMessage:
        """The mail for event: subject `subject=` or `[app] deployed 1.2.3`, the text, the fields."""
        named = event.replace(app=self.title) if self.title else event
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Subject"] = self.subject or named.title
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = make_msgid(domain=audit.hostname())
        details = "\n".join("%s: %s" % (k, v) for k, v in sorted(named.fields.items())
                            if v is not None and k not in ("output", "latest"))
        msg.set_content("%s\n\n%s\n" % (named.text, details))
        return msg

    def deliver(self, event: Event) -> None:
        """Connect (TLS as configured), log in when a username is set, send; NotifyError on failure."""
        msg = self.message(event)
        context = ssl.create_default_context() if self.tls else None
        try:
            if self.tls and self.port == IMPLICIT_TLS_PORT:
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                smtp.ehlo()
                if self.tls and self.port != IMPLICIT_TLS_PORT:
                    if not smtp.has_extn("starttls"):
                        raise NotifyError("%s offers no STARTTLS (use tls=false only for a trusted relay)"
                                          % self.describe())
                    smtp.starttls(context=context)
                    smtp.ehlo()
                if self.username:
                    smtp.login(self.username, self.password)
                smtp.send_message(msg, from_addr=self.sender, to_addrs=self.recipients)
        except smtplib.SMTPNotSupportedError:
            raise NotifyError("%s offers no AUTH%s" % (
                self.describe(), "" if self.tls else " without TLS (tls=false)")) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise NotifyError("%s refused the login of %s: %s"
                              % (self.describe(), self.username, exc.smtp_code)) from None
        except smtplib.SMTPResponseException as exc:
            raise NotifyError("%s answered %s" % (self.describe(), exc.smtp_code)) from None
        except (smtplib.SMTPException, OSError) as exc:
            # Never str() an exception that might quote the conversation (it could hold the AUTH line).
            raise NotifyError("cannot send mail via %s: %s" % (self.describe(), type(exc).__name__ + (
                ": %s" % exc.strerror if isinstance(exc, OSError) and exc.strerror else ""))) from None
