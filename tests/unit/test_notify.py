"""Notifiers against real receivers on 127.0.0.1: the production slack-sdk client against a Slack Web API
stand-in, smtplib against aiosmtpd (with AUTH, STARTTLS), webhooks against a server that checks the HMAC;
error limiting and quiet mode as sequences of real events through the Dispatcher the poller uses."""

import datetime
import email
import email.policy
import hashlib
import hmac
import json
import logging
import ssl
import time

import pytest

from dewy import notify
from dewy.notify import events
from dewy.notify.dispatch import Dispatcher
from dewy.notify.webhook import signature
from notifystubs import MailServer, SlackStub, WebhookServer

GOOD = "xoxb-good-1234567890"


def event(name, version="1.2.0", **fields):
    """A real event as the poller makes it."""
    return events.make(name, "web-1", "shop", version, **fields)


@pytest.fixture
def slack(monkeypatch):
    with SlackStub(tokens=(GOOD,), channels=("deploys", "ops")) as stub:
        monkeypatch.setenv("SLACK_API_URL", stub.api_url)
        monkeypatch.setenv("SLACK_TOKEN", GOOD)
        yield stub


# --- the setting ------------------------------------------------------------------------------

def test_setting_is_a_comma_separated_list_each_validated():
    setting = "slack://deploys?title=shop&thread=true, mail://smtp.example.com/a@example.com,b@example.com, " \
              "https://hooks.example.com/x?token=abc&secret=s"
    assert notify.split(setting) == ["slack://deploys?title=shop&thread=true",
                                     "mail://smtp.example.com/a@example.com,b@example.com",
                                     "https://hooks.example.com/x?token=abc&secret=s"]
    notify.validate_url(setting)
    kinds = [type(n).__name__ for n in notify.from_setting(setting)]
    assert kinds == ["SlackNotifier", "MailNotifier", "WebhookNotifier"]
    assert [type(n).__name__ for n in notify.from_setting("")] == ["LogNotifier"]


@pytest.mark.parametrize("setting, message", [
    ("slack://deploys?quiet=maybe", 'bad value "maybe" for query key "quiet"'),
    ("slack://deploys?colour=red", 'unknown query key "colour" for slack://; supported: quiet, thread, title, url'),
    ("mail://smtp.example.com", "mail notifier needs a recipient"),
    ("smtp://smtp.example.com/a@example.com?tls=perhaps", 'bad value "perhaps" for query key "tls"'),
    ("http://hooks.example.com/x", "http:// webhook URLs are allowed for loopback hosts only"),
    ("slack://deploys, teams://x", 'notifier #2: unsupported scheme "teams"'),
])
def test_bad_notifier_urls_are_one_line_errors(setting, message):
    with pytest.raises(ValueError) as err:
        notify.validate_url(setting)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_slack_api_url_must_end_with_a_slash(monkeypatch):
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:1/api")
    with pytest.raises(ValueError, match="SLACK_API_URL must end with /"):
        notify.validate_url("slack://deploys")


# --- Slack ------------------------------------------------------------------------------------

def test_slack_posts_through_the_sdk_with_title_link_and_threads(slack):
    notifier = notify.from_url("slack://deploys?title=Shop%20API&url=https://shop.example.com&thread=true")
    assert notifier.send_event(event("downloaded", bytes=3 << 20, seconds=1.5))
    assert notifier.send_event(event("deployed", previous_version="1.1.0", generation=4, switch_seconds=2.25))
    assert notifier.send_event(event("deployed", version="1.3.0", previous_version="1.2.0", generation=5,
                                     switch_seconds=0.5))
    first, second, third = slack.messages
    assert first["content_type"] == "application/json"  # what the SDK sends; the stand-in takes forms too
    assert "Shop API 1.2.0 downloaded on web-1: 3.0 MiB in 1.5s" in first["text"]
    assert second["text"] == "Shop API deployed on web-1: 1.1.0 -> 1.2.0 (generation 4, the switch took 2.2s)"
    assert "<https://shop.example.com|[Shop API] deployed 1.2.0>" in second["blocks"][0]["text"]["text"]
    # One thread per release: the second message about 1.2.0 replies to the first; 1.3.0 starts its own.
    assert first["thread_ts"] is None and second["thread_ts"] == first["ts"]
    assert third["thread_ts"] is None
    headers = slack.requests[0]["headers"]
    assert headers["authorization"] == "Bearer " + GOOD


def test_slack_thread_survives_a_restart(slack, tmp_path):
    """Dewy keeps its thread in .slack-thread-ts; dewy in .dewy/slack-threads.json: a new notifier (a restarted
    poller) replies in the thread the previous one started, per channel."""
    (tmp_path / ".dewy").mkdir()
    before = notify.from_url("slack://deploys?thread=true")
    before.use_workdir(str(tmp_path))
    assert before.send_event(event("downloaded", bytes=1, seconds=1))
    after = notify.from_url("slack://deploys?thread=true")
    after.use_workdir(str(tmp_path))
    other = notify.from_url("slack://ops?thread=true")
    other.use_workdir(str(tmp_path))
    assert after.send_event(event("deployed", previous_version="1.1.0"))
    assert other.send_event(event("deployed", previous_version="1.1.0"))
    first, second, third = slack.messages
    assert second["thread_ts"] == first["ts"] and third["thread_ts"] is None
    kept = json.loads((tmp_path / ".dewy" / "slack-threads.json").read_text())
    assert kept["deploys"] == {"1.2.0": first["ts"]} and kept["ops"] == {"1.2.0": third["ts"]}
    assert oct((tmp_path / ".dewy" / "slack-threads.json").stat().st_mode & 0o777) == "0o600"


def test_slack_stand_in_speaks_form_bodies_too(slack):
    """The stand-in follows the Web API: a form body with the token inside, blocks as a JSON string."""
    import requests

    answer = requests.post(slack.api_url + "chat.postMessage", data={
        "token": GOOD, "channel": "ops", "text": "hi", "blocks": json.dumps([{"type": "divider"}])}, timeout=5).json()
    assert answer["ok"] is True and slack.messages[-1]["content_type"] == "application/x-www-form-urlencoded"
    answer = requests.post(slack.api_url + "chat.postMessage", json={"token": GOOD, "channel": "ops", "text": "x"},
                           timeout=5).json()
    assert answer == {"ok": False, "error": "not_authed"}  # JSON bodies need the Authorization header


def test_slack_429_is_retried_after_retry_after(slack):
    slack.rate_limit_next(1, retry_after=1)
    notifier = notify.from_url("slack://deploys")
    began = time.monotonic()
    assert notifier.send_event(event("refused", error="checksum mismatch"))
    assert time.monotonic() - began >= 1.0, "the SDK's handler waits Retry-After before the retry"
    assert len(slack.requests) == 2 and len(slack.messages) == 1


def test_slack_bad_token_fails_with_slacks_error_and_no_token_in_the_log(slack, monkeypatch, caplog):
    monkeypatch.setenv("SLACK_TOKEN", "xoxb-wrong-0987654321")
    caplog.set_level(logging.WARNING, "dewy.notify")
    assert not notify.from_url("slack://deploys").send_event(event("deployed"))
    assert "invalid_auth" in caplog.text
    assert "xoxb-wrong" not in caplog.text and not slack.messages
    monkeypatch.setenv("SLACK_TOKEN", GOOD)
    assert not notify.from_url("slack://nowhere").send_event(event("deployed"))
    assert "channel_not_found" in caplog.text


# --- mail -------------------------------------------------------------------------------------

def _parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_dewy_url_defaults_slack_channel_and_mail_from(monkeypatch, caplog):
    """slack:// without a channel posts to Dewy's default channel; mail's From falls back to the username when it
    is an address (Dewy's rule), and without subject= the subject names the event."""
    monkeypatch.delenv("SLACK_TOKEN", raising=False)
    monkeypatch.delenv("MAIL_FROM", raising=False)
    notify.validate_url("slack://")
    slack = notify.from_url("slack://?title=shop")
    assert slack.channel == "randam" and slack.describe() == "slack://randam"
    assert "Dewy's default" in caplog.text and "SLACK_TOKEN is not set" in caplog.text
    mail = notify.from_url("mail://smtp.example.com/ops@example.com?username=bot@example.com&password=x")
    assert mail.sender == "bot@example.com"
    assert mail.message(event("deployed"))["Subject"].endswith("deployed 1.2.0")
    assert notify.from_url("mail://smtp.example.com/ops@example.com?username=bot").sender.startswith("dewy@")


def test_mail_logs_in_and_sends_one_mail_per_event(monkeypatch):
    with MailServer(users={"dewy": "s3cret-pass"}) as server:
        monkeypatch.setenv("MAIL_USERNAME", "dewy")
        monkeypatch.setenv("MAIL_PASSWORD", "s3cret-pass")
        monkeypatch.setenv("MAIL_FROM", "dewy@example.com")
        notifier = notify.from_url("mail://127.0.0.1:%d/ops@example.com,dev@example.com?tls=false&subject=[prod]"
                                   % server.port)
        assert notifier.send_event(event("hook-failed", hook="before-deploy-hook", error="exit 3",
                                         output="line 1\nmigration failed: table exists\n"))
        (sender, rcpt, raw, user, over_tls), = server.messages
        assert (sender, rcpt, user, over_tls) == ("dewy@example.com", ["ops@example.com", "dev@example.com"],
                                                  "dewy", False)
        msg = _parse(raw)
        assert msg["Subject"] == "[prod]"  # Dewy's subject=: the whole subject
        body = msg.get_content().replace("\r\n", "\n")
        assert "shop: before-deploy-hook failed on web-1 for 1.2.0: exit 3\nline 1\nmigration failed" in body
        assert "s3cret-pass" not in raw.decode()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_mail_wrong_password_is_logged_without_it(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, "dewy.notify")
    with MailServer(users={"dewy": "right"}) as server:
        url = "smtp://127.0.0.1:%d/ops@example.com?tls=false&username=dewy&password=wrong-pw-123" % server.port
        assert not notify.from_url(url).send_event(event("deployed"))
        assert server.logins and all(who == ("dewy", False) for who in server.logins) and not server.messages
    assert "refused the login of dewy: 535" in caplog.text and "wrong-pw-123" not in caplog.text


@pytest.fixture
def tls_pair(tmp_path, monkeypatch):
    """A self-signed certificate for 127.0.0.1 and a server context; the client trusts it via SSL_CERT_FILE."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
    return context


def test_mail_starttls_by_default_and_tls_false_really_off(tls_pair, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, "dewy.notify")
    with MailServer(users={"dewy": "pw-123456"}, tls_context=tls_pair, require_starttls=True) as server:
        monkeypatch.setenv("MAIL_PASSWORD", "pw-123456")
        url = "mail://dewy@127.0.0.1:%d/ops@example.com?username=dewy" % server.port
        assert notify.from_url(url).send_event(event("deployed"))
        assert server.messages[-1][3:] == ("dewy", True), "logged in and sent over STARTTLS"
        # tls=false never upgrades: this server insists on STARTTLS first, so nothing goes out.
        assert not notify.from_url(url + "&tls=false").send_event(event("deployed"))
        assert len(server.messages) == 1
    assert "offers no AUTH without TLS (tls=false)" in caplog.text


# --- webhook ----------------------------------------------------------------------------------

def test_webhook_posts_json_signed_with_the_secret_which_stays_out_of_the_url():
    with WebhookServer(secret="hook-secret-42") as server:
        notifier = notify.from_url(server.url(query="team=web&secret=hook-secret-42&token=t0"))
        assert notifier.send_event(event("rolled-back", to_version="1.1.0", error="crashed 3 times"))
        (request,) = server.requests
        assert request["verified"] is True and request["query"] == {"team": "web", "token": "t0"}
        body = json.loads(request["body"])
        assert body["event"] == "rolled-back" and (body["host"], body["app"], body["version"]) == \
            ("web-1", "shop", "1.2.0")
        assert body["text"] == "shop rolled back on web-1: 1.2.0 -> 1.1.0: crashed 3 times"
        want = "sha256=" + hmac.new(b"hook-secret-42", request["body"], hashlib.sha256).hexdigest()
        assert request["headers"]["x-dewy-signature-256"] == want == signature("hook-secret-42", request["body"])


def test_webhook_secret_from_the_environment_and_a_wrong_one_is_rejected(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, "dewy.notify")
    with WebhookServer(secret="env-secret-77") as server:
        monkeypatch.setenv("DEWY_WEBHOOK_SECRET", "env-secret-77")
        assert notify.from_url(server.url()).send_event(event("deployed"))
        monkeypatch.setenv("DEWY_WEBHOOK_SECRET", "not-the-secret")
        assert not notify.from_url(server.url()).send_event(event("deployed"))
        assert [r["verified"] for r in server.requests] == [True, False]
    assert "answered HTTP 401" in caplog.text and "not-the-secret" not in caplog.text


def test_webhook_unsigned_without_a_secret(monkeypatch):
    monkeypatch.delenv("DEWY_WEBHOOK_SECRET", raising=False)
    with WebhookServer() as server:
        assert notify.from_url(server.url()).send_event(event("deployed"))
        assert "x-dewy-signature-256" not in server.requests[0]["headers"]


# --- sequences: error limiting, quiet mode, never blocking -----------------------------------

def test_error_limiting_three_then_one_notice_then_silence_until_a_success():
    with WebhookServer() as server:
        dispatcher = Dispatcher(notify.from_setting(server.url()), app="shop")
        for n in range(3):
            dispatcher.emit("refused", "1.%d.0" % n, error="bad archive %d" % n)
        dispatcher.emit("registry-unreachable", "1.0.0", error="connection refused")
        dispatcher.emit("failed", "1.4.0", error="disk full")
        dispatcher.emit("hook-failed", "1.5.0", error="exit 1", output="boom")
        dispatcher.emit("downloaded", "1.6.0", bytes=10, seconds=0.1)  # news, not an error: passes
        dispatcher.emit("deployed", "1.6.0", previous_version="1.0.0", generation=2, switch_seconds=1.0)
        dispatcher.emit("refused", "1.7.0", error="again")  # a new run of errors starts after the success
        assert dispatcher.flush(15)
        assert server.names() == ["refused", "refused", "refused", "suppressed", "downloaded", "deployed", "refused"]
        notice, deployed = server.events[3], server.events[5]
        assert "further errors suppressed until recovery" in notice["text"]
        assert "registry is unreachable" in notice["latest"]
        assert deployed["suppressed"] == 3 and "(3 error notifications suppressed meanwhile)" in deployed["text"]
        dispatcher.close()


def test_quiet_keeps_deploys_refusals_rollbacks_and_errors_only(slack):
    dispatcher = Dispatcher(notify.from_setting("slack://deploys?quiet=true, slack://ops"), app="shop")
    sequence = [("started", {}), ("downloaded", {"bytes": 1, "seconds": 1}), ("deployed", {"generation": 2}),
                ("registry-unreachable", {"error": "timeout"}), ("registry-reachable", {"failed_polls": 1}),
                ("refused", {"error": "bad"}), ("rolled-back", {"to_version": "1.1.0", "error": "crashed"}),
                ("stopped", {"reason": "graceful stop"})]
    for name, fields in sequence:
        dispatcher.emit(name, "1.2.0", **fields)
    assert dispatcher.flush(15)
    by_channel = {"deploys": [], "ops": []}
    for message in slack.messages:
        by_channel[message["channel"]].append(message["text"])
    assert len(by_channel["ops"]) == len(sequence)
    quiet = by_channel["deploys"]
    expected = ["shop deployed on", "registry is unreachable", "shop 1.2.0 refused", "shop rolled back"]
    assert len(quiet) == len(expected) and all(want in text for want, text in zip(expected, quiet)), quiet
    dispatcher.close()


def test_notifying_never_blocks_and_never_raises(caplog):
    caplog.set_level(logging.WARNING, "dewy.notify")
    with WebhookServer(delay=1.0) as slow:
        dead = WebhookServer()
        dead_url = dead.url()
        dead.close()  # nothing listens there any more
        dispatcher = Dispatcher(notify.from_setting("%s, %s" % (slow.url(), dead_url)), app="shop")
        began = time.monotonic()
        for n in range(3):
            dispatcher.emit("deployed", "1.%d.0" % n)
        assert time.monotonic() - began < 0.5, "emit() returns at once; the thread delivers (1 s each)"
        assert dispatcher.flush(30)
        assert len(slow.events) == 3 and dispatcher.failed == 3
        assert "no answer from http://127.0.0.1: ConnectionError" in caplog.text
        dispatcher.close()


@pytest.mark.parametrize("base", ["http://10.1.2.3/api/", "http://slack.example.com/api/"])
def test_slack_api_url_plain_http_off_loopback_is_refused(monkeypatch, base):
    """The bot token travels to SLACK_API_URL: the same rule as webhooks and GitHub (http:// to loopback only)."""
    from dewy import notify

    monkeypatch.setenv("SLACK_API_URL", base)
    with pytest.raises(ValueError, match="loopback"):
        notify.validate_url("slack://deploys")
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:8/api/")
    notify.validate_url("slack://deploys")
