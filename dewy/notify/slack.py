"""`slack://<channel>?title=<app>&url=<link>&quiet=true&thread=true`: chat.postMessage via slack-sdk.

Without a channel (`slack://`), Dewy's default channel `randam` (sic, Dewy's spelling).

The bot token comes from `SLACK_TOKEN` (never from the URL: an ini is read by more people than a unit's
environment file). `SLACK_API_URL` points the client at a Slack-compatible server; like the SDK's own
base_url it must end with `/`. HTTP 429 is retried once after `Retry-After` by the SDK's rate-limit retry
handler (waits longer than MAX_RETRY_AFTER are not: the message is dropped and logged instead).
With `thread=true`, every message about one version goes into the thread its first message started; the
threads' timestamps are kept in `.dewy/slack-threads.json` ({channel: {version: ts}}), so a restarted dewy
(a crash, an upgrade, a reboot) goes on posting into the same thread, as Dewy does with its `.slack-thread-ts`.
"""

import os

from dewy import urls
from dewy.notify.base import Notifier, NotifyError
from dewy.notify.events import Event

MAX_RETRY_AFTER = 30  # seconds: a longer rate-limit wait would hold the queue of notifications up too long
MAX_THREADS = 50      # versions whose thread ts is remembered
THREADS_FILE = "slack-threads.json"  # under .dewy/
# slack:// without a channel posts where Dewy does: its default channel, spelled as Dewy spells it
# (notifier/slack.go defaultSlackChannel), so a Dewy user's messages keep going where they went.
DEFAULT_CHANNEL = "randam"
SECTION_LIMIT = 2500  # characters of the text in the message's section block (Slack's limit is 3000)


class SlackNotifier(Notifier):
    """Posts each event to a channel with the Web API's chat.postMessage."""

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError for a bad boolean or a non-http link (no channel: Dewy's default, DEFAULT_CHANNEL)."""
        for key in ("quiet", "thread"):
            urls.query_bool(parsed, key)
        link = parsed.query.get("url")
        if link and not link.startswith(("https://", "http://")):
            raise ValueError("slack notifier: url= must be an http(s) link")
        base = os.environ.get("SLACK_API_URL")
        if base and not base.endswith("/"):
            raise ValueError("SLACK_API_URL must end with / (e.g. https://slack.example.com/api/)")
        if base:  # the bot token travels on it: the one web URL rule (plain http only to loopback)
            try:
                urls.check_web_url(urls.parse(base), "SLACK_API_URL")
            except ValueError as exc:
                raise ValueError("SLACK_API_URL: %s" % exc) from None

    def __init__(self, url: str):
        super().__init__(url)
        self.validate(self.parsed)
        # A name (deploys, #deploys) or an id (C0123ABC): chat.postMessage takes either as it is.
        self.channel = (self.parsed.netloc + self.parsed.path).strip("/") or DEFAULT_CHANNEL
        from dewy.notify.base import log
        if self.channel == DEFAULT_CHANNEL and not (self.parsed.netloc + self.parsed.path).strip("/"):
            log.warning("notifier slack://: no channel given; posting to #%s, Dewy's default (name one: "
                        "slack://<channel>)", DEFAULT_CHANNEL)
        if not os.environ.get("SLACK_TOKEN"):
            # Dewy logs this once and sends nothing; dewy says so once too, and each send then fails in the log.
            log.error("notifier %s: SLACK_TOKEN is not set: nothing can be posted", self.describe())
        self.link = self.parsed.query.get("url") or ""
        self.thread = urls.query_bool(self.parsed, "thread")
        self.threads = {}  # version -> ts of the message that started its thread
        self.threads_file = None  # where they are kept (use_workdir)
        self._client = None

    def use_workdir(self, workdir: str) -> None:
        """Keep this channel's threads in workdir/.dewy/slack-threads.json, and take the ones kept there."""
        if not self.thread:
            return
        from dewy import statefiles as status
        from dewy.workdir import state_path

        self.threads_file = state_path(workdir, THREADS_FILE)
        kept = status.read_json(self.threads_file, "Slack threads") or {}
        mine = kept.get(self.channel) if isinstance(kept, dict) else None
        if isinstance(mine, dict):
            self.threads = {v: ts for v, ts in mine.items() if isinstance(ts, str)} | self.threads

    def _save_threads(self) -> None:
        """Write this channel's threads next to the other channels' (a failure is logged: only threading suffers)."""
        if self.threads_file is None:
            return
        from dewy import statefiles as status
        from dewy.notify.base import log

        try:
            kept = status.read_json(self.threads_file, "Slack threads") or {}
            kept = kept if isinstance(kept, dict) else {}
            kept[self.channel] = dict(self.threads)
            status.write_json_atomic(self.threads_file, kept)
        except OSError as exc:
            log.warning("cannot keep the Slack threads in %s: %s", self.threads_file, exc)

    def describe(self) -> str:
        """slack://<channel> (the channel is not a secret; the token never is in the URL)."""
        return "slack://%s" % self.channel.lstrip("#")

    def client(self):
        """The WebClient (made once): SLACK_TOKEN, SLACK_API_URL, bounded timeout, 429 retry handler."""
        if self._client is None:
            from slack_sdk import WebClient
            from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

            class BoundedRateLimitRetry(RateLimitErrorRetryHandler):
                """The SDK's 429 handler, except that a Retry-After beyond MAX_RETRY_AFTER is not waited for."""

                def _can_retry(self, *, state, request, response=None, error=None) -> bool:
                    if not super()._can_retry(state=state, request=request, response=response, error=error):
                        return False
                    for key, value in response.headers.items():
                        if key.lower() == "retry-after":
                            text = value[0] if isinstance(value, list) else value
                            return text.strip().isdigit() and int(text) <= MAX_RETRY_AFTER
                    return True

            token = os.environ.get("SLACK_TOKEN", "")
            if not token:
                raise NotifyError("SLACK_TOKEN is not set")
            kwargs = {"token": token, "timeout": int(self.timeout),
                      "retry_handlers": [BoundedRateLimitRetry(max_retry_count=1)]}
            base = os.environ.get("SLACK_API_URL")
            if base:
                kwargs["base_url"] = base
            self._client = WebClient(**kwargs)
        return self._client

    def message(self, event: Event) -> tuple[str, list]:
        """The fallback text and the Block Kit blocks of event."""
        named = event.replace(app=self.title) if self.title else event
        text = named.text
        headline = _escape(named.title)
        # url= links the headline (the app's dashboard, the release page).
        headline = "*<%s|%s>*" % (self.link, headline) if self.link else "*%s*" % headline
        body = _escape(text)
        if len(body) > SECTION_LIMIT:  # Slack refuses a section text over 3000 characters (invalid_blocks)
            body = body[:SECTION_LIMIT - 1] + "…"
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "%s\n%s" % (headline, body)}}]
        return text, blocks

    def deliver(self, event: Event) -> None:
        """chat.postMessage; a thread per version with thread=true. NotifyError names Slack's `error` code."""
        from slack_sdk.errors import SlackApiError, SlackClientError

        text, blocks = self.message(event)
        version = event.fields.get("version")
        kwargs = {"channel": self.channel, "text": text, "blocks": blocks}
        if self.thread and version and version in self.threads:
            kwargs["thread_ts"] = self.threads[version]
        try:
            response = self.client().chat_postMessage(**kwargs)
        except SlackApiError as exc:
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            raise NotifyError("Slack answered HTTP %s: %s" % (
                exc.response.status_code, data.get("error") or "not ok")) from None
        except SlackClientError as exc:
            raise NotifyError("Slack: %s" % type(exc).__name__) from None
        except OSError as exc:  # URLError, timeouts, refused connections
            raise NotifyError("cannot reach Slack: %s" % (getattr(exc, "reason", None) or exc)) from None
        if self.thread and version and version not in self.threads and response.get("ts"):
            if len(self.threads) >= MAX_THREADS:
                self.threads.pop(next(iter(self.threads)))
            self.threads[version] = response["ts"]
            self._save_threads()


def _escape(text: str) -> str:
    """Text for mrkdwn: &, <, > escaped as Slack requires."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
