"""Every ini example the README shows (and examples/dewy.ini) loads with dewy's own ini reader: operators copy
them, comments and placeholders (PASSWORD) included, so an example that fails `--check` is a bug."""

import os
import re

import pytest

from dewy.config import load_ini

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)\s*=")  # a key line at the start of its line (not a comment)


def readme_blocks() -> list[tuple[str, str]]:
    """(name, text) of each ```ini block of README.md, named by its line."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    blocks = []
    for match in re.finditer(r"^```ini\n(.*?)^```", text, re.M | re.S):
        blocks.append(("README.md:%d" % (text.count("\n", 0, match.start()) + 1), match[1]))
    return blocks


def variants(block: str) -> list[str]:
    """The ini files a block stands for: a fragment gets the [dewy] header and what any file needs (a registry;
    an app in server mode); a key shown several times (alternatives: `cache = redis://...` then `cache = consul://...`)
    makes one file per occurrence, each keeping that occurrence and every other line."""
    lines = block.splitlines()
    keys = [(KEY.match(line)[1].lower() if KEY.match(line) else None) for line in lines]
    repeated = {k for k in keys if k and keys.count(k) > 1}
    count = max([keys.count(k) for k in repeated] or [1])
    files = []
    for n in range(count):
        seen: dict = {}
        kept = []
        for line, key in zip(lines, keys):
            if key in repeated:
                seen[key] = seen.get(key, -1) + 1
                if seen[key] != min(n, keys.count(key) - 1):
                    continue
            kept.append(line)
        text = "\n".join(kept) + "\n"
        present = {k for k in keys if k}
        if not re.search(r"^\[dewy\]", text, re.M):
            text = "[dewy]\n" + text
        if "registry" not in present:
            text += "registry = file:///srv/registry\n"
        if "app" not in present and "mode = assets" not in text and "mode = container" not in text:
            text += "app = ./app\n"
        files.append(text)
    return files


def with_files(text: str) -> str:
    """text with each file a URL's ?ca= names (/etc/dewy/registry-ca.pem: the operator's own) replaced by a real
    CA bundle, since dewy reads it while checking the URL."""
    import certifi  # requests' CA bundle, installed with it

    return re.sub(r"([?&]ca=)/[^&\s]+", lambda m: m[1] + certifi.where(), text)


CASES = [(name, i, text) for name, block in readme_blocks() for i, text in enumerate(variants(block))]


def test_the_readme_has_ini_examples():
    # The extraction itself: a README rewritten with other fences must not leave this file testing nothing.
    assert len(readme_blocks()) >= 5 and any("# keep this ini chmod 600" in b for _, b in readme_blocks())
    assert len(CASES) > len(readme_blocks())  # the blocks of alternatives became one file each


@pytest.mark.parametrize("name, variant, text", CASES, ids=["%s#%d" % (n, i) for n, i, _ in CASES])
def test_a_readme_ini_example_loads(tmp_path, monkeypatch, name, variant, text):
    monkeypatch.delenv("DEWY_CACHEDIR", raising=False)
    path = tmp_path / "dewy.ini"
    path.write_text(with_files(text))
    load_ini(str(path))  # a ConfigError here names the file, key and value


def test_the_readme_examples_keep_their_comments_out_of_the_values(tmp_path):
    # The shared-caches and fleet examples end lines with "# ...": the values must not carry them.
    for _, _, text in CASES:
        if "# keep this ini chmod 600" in text or "rollout-waves = 10%, 50%" in text:
            path = tmp_path / "dewy.ini"
            path.write_text(with_files(text))
            config = load_ini(str(path))
            assert "#" not in config.cache and "chmod" not in config.cache
            if "rollout-waves" in text:
                assert (config.rollout_waves, config.rollout_soak, config.host_id) == ((10.0, 50.0), 300.0, "web-3")


def test_the_example_ini_file_loads():
    config = load_ini(os.path.join(ROOT, "examples", "dewy.ini"))
    assert config.registry == "file:///tmp/dewy-example/registry?artifact=app.tar.gz"
