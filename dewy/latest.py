"""`dewy latest`: ask the registry once and say what dewy would deploy now, or why nothing qualifies.

The first thing to run when a deploy does not happen. With `-c dewy.ini` the registry, slot, cache and
the workdir's refused versions are the master's; with `--registry URL` only the URL's own rules apply.
"""

import json
import sys

from dewy.config import ConfigError, from_options, load_ini
from dewy.log import redact, redact_text

EXIT_OK = 0
EXIT_NOTHING = 1
EXIT_USAGE = 2

USAGE = "dewy latest (-c INI | --registry URL) [--slot SLOT] [--json]"
OPTIONS = """Latest options:
  -c INI, --config INI  Ask the registry of this ini file, skipping the versions its workdir refused.
  --registry URL        Ask this registry (its query keys apply: ?pre-release=true, ?artifact=NAME...).
  --slot SLOT           Only releases whose build metadata is SLOT (with --registry).
  --json                Print the answer as one JSON object.
"""


def _setup(args: dict):
    """(config, refused versions) from -c INI or --registry URL; ConfigError when they are bad."""
    if args.get("--config"):
        config = load_ini(args["--config"])
        from dewy.poller.deploy import Refused

        return config, Refused(config.workdir).load()
    values = {"registry": args.get("--registry"), "mode": "assets", "slot": args.get("--slot") or ""}
    return from_options(values), {}


def describe(release) -> dict:
    """What `dewy latest --json` prints for a release (URLs redacted)."""
    return {
        "version": release.version, "tag": release.tag, "artifact": release.artifact_name,
        "url": redact(release.artifact_url), "sha256": release.sha256,
        "checksum_source": release.checksum_source,
    }


def main(args: dict) -> int:
    """Run `dewy latest`; 0 when a release qualifies, 1 when none does (or the registry fails), 2 bad input."""
    import logging

    from dewy import registry as registry_pkg

    logging.basicConfig(level=logging.WARNING, format="dewy: %(message)s", stream=sys.stderr)
    try:
        config, refused = _setup(args)
    except ConfigError as exc:
        print("dewy: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:  # dewy.statefiles.StateFileError: refused.json unreadable; no answer is better than a wrong one
        print("dewy: %s" % exc, file=sys.stderr)
        return 1
    try:
        # The registry itself, not a cache: this is the question "what does the registry say now", and
        # building the configured cache would create its directories as whoever runs this command.
        registry = registry_pkg.from_url(config.registry, slot=config.slot)
        release = registry.latest(exclude=tuple(refused))
    except Exception as exc:  # noqa: BLE001 - any failure is the answer: say it in one line
        reason = redact_text(str(exc)) or type(exc).__name__
        if args.get("--json"):
            print(json.dumps({"registry": redact(config.registry), "error": reason}))
        else:
            print("dewy: %s: %s" % (redact(config.registry), reason), file=sys.stderr)
        return EXIT_NOTHING
    answer = describe(release)
    # The poller would refuse a release without a checksum under verify-checksum = required: say so.
    unverifiable = config.verify_checksum == "required" and not release.sha256
    if unverifiable:
        answer["refusal"] = "no checksum published, and verify-checksum = required"
    if args.get("--json"):
        print(json.dumps(dict(answer, registry=redact(config.registry), refused=sorted(refused)), sort_keys=True))
        return EXIT_NOTHING if unverifiable else EXIT_OK
    checksum = "%s (from %s)" % (release.sha256, release.checksum_source or "the registry") if release.sha256 \
        else "none published"
    rows = [("registry", redact(config.registry)), ("version", release.version), ("tag", release.tag),
            ("artifact", release.artifact_name), ("url", answer["url"]), ("sha256", checksum)]
    if refused:
        rows.append(("refused", ", ".join(sorted(refused))))
    if unverifiable:
        rows.append(("verdict", "would be refused: %s" % answer["refusal"]))
    print("\n".join("%-9s %s" % row for row in rows))
    return EXIT_NOTHING if unverifiable else EXIT_OK
