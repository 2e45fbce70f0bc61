"""The one config type, `Config` (and its `Ready`): what dewy.config builds and what every process runs on.

dewy.config declares each setting once (SETTINGS), parses and validates them and builds a Config; the
poller and the lean master rebuild the same class from `Config.to_json()` (`Config.from_json`). This
module is the class alone, standard library only and no dataclasses (inspect, ast: 1 MiB), so the
long-lived master imports it without the parser, the validators or the registry modules (see
docs/ARCHITECTURE.md, "Lean rule"). The attributes are SETTINGS' (snake_case names), plus `source`.
"""


class Ready:
    """When a new app generation counts as ready: alive after `seconds` (delay), READY=1 within them (notify),
    or a 2xx to GET `path` within them (http). Frozen."""

    __slots__ = ("kind", "seconds", "path")

    def __init__(self, kind: str, seconds: float, path: str = ""):
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "seconds", float(seconds))
        object.__setattr__(self, "path", path)

    def __setattr__(self, key, value):
        raise AttributeError("Ready is frozen")

    def _key(self) -> tuple:
        return self.kind, self.seconds, self.path

    def __eq__(self, other):
        return isinstance(other, Ready) and other._key() == self._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return "Ready(kind=%r, seconds=%r, path=%r)" % self._key()

    def to_json(self) -> dict:
        """{kind, seconds, path}: what Config.to_json() holds for it."""
        return {"kind": self.kind, "seconds": self.seconds, "path": self.path}


class Config:
    """A validated, normalised dewy configuration (frozen): one attribute per setting (dewy.config.SETTINGS,
    snake_case) and `source` (the ini path, or "command line"). Built by dewy.config (load_ini,
    from_options) or from_json(); `warnings` (settings that have no effect) is not part of it."""

    # The settings' attribute names, set by dewy.config from SETTINGS where it is loaded (the poller, the CLI):
    # from_json() then ignores a key it does not know (a newer master's). None in the lean master, which
    # keeps every key it is sent and hands the same JSON on to its poller.
    ATTRIBUTES: tuple | None = None

    def __init__(self, source: str = "", **values):
        for key, value in values.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "source", source)

    def __setattr__(self, key, value):
        raise AttributeError("the configuration is frozen: %s cannot change (a reload builds a new one)" % key)

    def __delattr__(self, key):
        raise AttributeError("the configuration is frozen")

    def values(self) -> dict:
        """The settings' values by attribute name (not `source`)."""
        return {k: v for k, v in vars(self).items() if k not in ("source", "warnings")}

    def __eq__(self, other):
        return isinstance(other, Config) and (other.values(), other.source) == (self.values(), self.source)

    def __hash__(self):
        return hash((tuple(sorted(self.values().items())), self.source))

    def __repr__(self):
        return "Config(%s)" % ", ".join("%s=%r" % kv for kv in [*self.values().items(), ("source", self.source)])

    def to_json(self) -> dict:
        """This config as a JSON-able dict (attribute names as keys); from_json reverses it."""
        data = {}
        for key, value in self.values().items():
            if isinstance(value, Ready):
                value = value.to_json()
            elif isinstance(value, tuple):
                value = list(value)
            data[key] = value
        data["source"] = self.source
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Config":
        """The Config that to_json() produced `data` from (lists become tuples, `ready` a Ready); ValueError
        when a declared attribute (ATTRIBUTES) is missing."""
        missing = [key for key in cls.ATTRIBUTES or () if key not in data]
        if missing:
            raise ValueError('config JSON lacks "%s"' % '", "'.join(missing))
        values = {}
        for key, value in data.items():
            if key == "source" or (cls.ATTRIBUTES is not None and key not in cls.ATTRIBUTES):
                continue
            if isinstance(value, dict) and "kind" in value and "seconds" in value:
                value = Ready(value["kind"], value["seconds"], value.get("path", ""))
            elif isinstance(value, list):
                value = tuple(value)
            values[key] = value
        return cls(source=data.get("source", ""), **values)
