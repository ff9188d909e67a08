"""Record a run and replay it to the identical final state.

A recording holds every input of a run — the image, how it was loaded, the backend, the
machine configuration and the instruction budget — plus what the run did: the sequence of
hook calls (instruction count, op, arguments, result) and a digest of the final state
(registers, console, and a hash of every RAM page the guest wrote). A machine has no other
input (time comes from retired instructions, never from the host), so replaying the inputs
must reproduce the hook sequence and the state exactly; :func:`replay` checks both and
names the first hook call where the runs part.
"""

from __future__ import annotations

import base64
import hashlib
import json
import string
import zlib
from pathlib import Path
from typing import Any

import attrs

from pvframe.hookspecs import PREFIX, all_hook_names, hookimpl
from pvframe.machine import (
    DEFAULT_WALL_CLOCK_S,
    STOP_REASONS,
    STOP_WALL,
    Machine,
    MachineConfig,
    RunResult,
)
from pvframe.plugins import SPEC_PARAMS

FORMAT = "pvframe-recording/1"


class HookLog:
    """A plugin with one pluggy hook wrapper per op, logging every call with the
    instruction count at which it happened (the wrappers see the spec's arguments)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, list[Any], Any]] = []
        for hook in all_hook_names():
            setattr(self, hook, self._wrapper(hook))

    def _sink(self, machine: Any, op: str, args: tuple[Any, ...], result: Any) -> None:
        self.calls.append((machine.cpu.icount, op, _plain(args), _plain(result)))

    def _wrapper(self, hook: str) -> Any:
        params = SPEC_PARAMS[hook]  # machine first
        rest = ", ".join(params[1:])
        source = (
            f"def {hook}({', '.join(params)}):\n"
            f"    result = yield\n"
            f"    sink(machine, {hook[len(PREFIX):]!r}, ({rest}{',' if rest else ''}), result)\n"
            f"    return result\n"
        )
        namespace: dict[str, Any] = {"sink": self._sink}
        exec(source, namespace)  # a wrapper with the spec's argument names
        return hookimpl(wrapper=True)(namespace[hook])


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, int | str | bool):
        return value
    return repr(value)


def state_digest(machine: Machine, result: RunResult) -> str:
    """SHA-256 over the registers, console, stop and every allocated RAM page."""
    h = hashlib.sha256()
    h.update(json.dumps([result.stop, result.exit_code, result.instructions,
                         result.registers, result.console], sort_keys=True).encode())
    for pfn in sorted(machine.memory.pages):
        h.update(pfn.to_bytes(4, "little"))
        h.update(machine.memory.read_bytes(pfn << 12, 4096))
    return h.hexdigest()


@attrs.frozen
class Recording:
    backend: str
    image: bytes
    load: dict[str, Any]
    config: dict[str, Any]
    max_instructions: int
    calls: list[tuple[int, str, list[Any], Any]]
    digest: str
    stop: str

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT,
            "backend": self.backend,
            "image": base64.b64encode(zlib.compress(self.image, 9)).decode(),
            "load": self.load,
            "config": self.config,
            "max_instructions": self.max_instructions,
            "calls": self.calls,
            "digest": self.digest,
            "stop": self.stop,
        })

    @classmethod
    def from_json(cls, text: str) -> Recording:
        """Parse and validate a recording; a :class:`RecordingError` (a ValueError) names
        the first key that is missing, unknown or of the wrong type or value."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RecordingError(f"unreadable recording: {exc}") from None
        return _parse(data)


class RecordingError(ValueError):
    """A recording file that is not a valid recording; the message is one line naming
    what is wrong."""


_TOP_KEYS = ("format", "backend", "image", "load", "config", "max_instructions", "calls",
             "digest", "stop")
#: load kind -> (required keys, optional keys) besides ``kind``
_LOAD_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "raw": (("load_addr",), ("entry", "esp")),
    "multiboot": ((), ("cmdline", "esp")),
}
_CONFIG_KEYS = tuple(f.name for f in attrs.fields(MachineConfig))
#: the largest guest RAM a machine can have: a bigger decompressed image is refused
_MAX_IMAGE = 3 << 30


def _bad(where: str, what: str) -> RecordingError:
    return RecordingError(f"invalid recording: {where} {what}")


def _json_type(value: Any) -> str:
    """What a decoded JSON value is, in JSON's words."""
    for kind, name in ((bool, "a boolean"), (int, "a number"), (float, "a number"),
                       (str, "a string"), (list, "an array"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return "null"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _keys(obj: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    if not isinstance(obj, dict):
        raise _bad(where, f"must be a JSON object, not {_json_type(obj)}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise _bad(where, f"lacks the key {missing[0]!r}")
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        raise _bad(where, f"has an unknown key {unknown[0]!r} (allowed: "
                   f"{', '.join((*required, *optional))})")


def _u32(value: Any, where: str, nullable: bool = False) -> int | None:
    if value is None and nullable:
        return None
    if not _is_int(value) or not 0 <= value <= 0xFFFFFFFF:
        raise _bad(where, f"must be a 32-bit unsigned integer{' or null' if nullable else ''}, "
                   f"not {value!r:.40}")
    return int(value)


def _parse(data: Any) -> Recording:
    """Validate the decoded JSON of a recording, key by key (attrs/JSON types, value
    ranges, the machine configuration through :class:`MachineConfig` itself)."""
    if isinstance(data, dict) and data.get("format") != FORMAT:
        raise RecordingError(f"not a {FORMAT} file (format {data.get('format')!r:.40})")
    _keys(data, "the recording", _TOP_KEYS)
    backend = data["backend"]
    if not isinstance(backend, str) or not backend:
        raise _bad("'backend'", f"must be a backend name (a string), not {backend!r:.40}")
    try:
        if not isinstance(data["image"], str):
            raise TypeError
        packed = base64.b64decode(data["image"], validate=True)
        inflate = zlib.decompressobj()
        image = inflate.decompress(packed, _MAX_IMAGE)
        if inflate.unconsumed_tail:
            raise _bad("'image'", f"is larger than {_MAX_IMAGE:#x} bytes")
    except (TypeError, ValueError, zlib.error) as exc:
        if isinstance(exc, RecordingError):
            raise
        raise _bad("'image'", "must be base64 of zlib-compressed bytes") from None
    load = data["load"]
    _keys(load, "'load'", ("kind",), ("load_addr", "entry", "esp", "cmdline"))
    kind = load["kind"]
    if not isinstance(kind, str) or kind not in _LOAD_KEYS:
        raise _bad("'load.kind'", f"must be one of {', '.join(map(repr, _LOAD_KEYS))}, "
                   f"not {kind!r:.40}")
    required, optional = _LOAD_KEYS[kind]
    _keys(load, f"'load' of kind {kind!r}", ("kind", *required), optional)
    for key in ("load_addr", "entry", "esp"):
        if key in load:
            _u32(load[key], f"'load.{key}'", nullable=key != "load_addr")
    if not isinstance(load.get("cmdline", ""), str):
        raise _bad("'load.cmdline'", "must be a string")
    config = data["config"]
    _keys(config, "'config'", (), _CONFIG_KEYS)
    for key, value in config.items():
        if key == "cpu":
            if not isinstance(value, str):
                raise _bad("'config.cpu'", f"must be a CPU model name, not {value!r:.40}")
        elif not _is_int(value):
            raise _bad(f"'config.{key}'", f"must be an integer, not {value!r:.40}")
    try:
        MachineConfig(**config)
    except ValueError as exc:
        raise _bad("'config'", f"is not a valid machine: {exc}") from None
    budget = data["max_instructions"]
    if not _is_int(budget) or budget <= 0:
        raise _bad("'max_instructions'", f"must be a positive integer, not {budget!r:.40}")
    calls = data["calls"]
    if not isinstance(calls, list):
        raise _bad("'calls'", "must be an array of [icount, op, args, result]")
    for i, call in enumerate(calls):
        if (not isinstance(call, list) or len(call) != 4 or not _is_int(call[0])
                or not isinstance(call[1], str) or not isinstance(call[2], list)):
            raise _bad(f"'calls[{i}]'", f"must be [icount, op, args, result], not {call!r:.60}")
    digest = data["digest"]
    if not isinstance(digest, str) or len(digest) != 64 or set(digest) - set(string.hexdigits):
        raise _bad("'digest'", "must be 64 hex digits (SHA-256)")
    stop = data["stop"]
    if not isinstance(stop, str) or stop not in STOP_REASONS:
        raise _bad("'stop'", f"must be one of {', '.join(sorted(STOP_REASONS))}, not {stop!r:.40}")
    return Recording(backend, image, dict(load), dict(config), budget,
                     [tuple(c) for c in calls], digest, stop)


def _execute(backend: str, image: bytes, load: dict[str, Any], config: dict[str, Any],
             max_instructions: int, wall_clock_s: float | None = DEFAULT_WALL_CLOCK_S,
             ) -> tuple[Machine, RunResult, HookLog]:
    log = HookLog()
    machine = Machine(backend, MachineConfig(**config), extra_plugins=[log])
    if load["kind"] == "raw":
        machine.load_raw(image, load["load_addr"], load.get("entry"), esp=load.get("esp"))
    else:
        machine.load_multiboot(image, cmdline=load.get("cmdline", ""), esp=load.get("esp"))
    result = machine.run(max_instructions, wall_clock_s=wall_clock_s)
    return machine, result, log


def record(backend: str, image: bytes, load: dict[str, Any], *,
           config: MachineConfig | None = None, max_instructions: int = 50_000_000) -> Recording:
    """Run once and keep everything needed to replay it."""
    cfg = attrs.asdict(config or MachineConfig())
    machine, result, log = _execute(backend, image, load, cfg, max_instructions)
    return Recording(backend, image, load, cfg, max_instructions, log.calls,
                     state_digest(machine, result), result.stop)


@attrs.frozen
class ReplayResult:
    identical: bool
    calls: int
    first_difference: str | None


def replay(rec: Recording, wall_clock_s: float | None = DEFAULT_WALL_CLOCK_S) -> ReplayResult:
    """Run the recording's inputs again; compare the hook sequence and the final state.

    The replay has a host-time limit like any run (``wall_clock_s``; None: none): a
    recording whose budget would take longer (a looping guest with ``max_instructions``
    raised) ends as not identical, saying where it stopped. Raises
    :class:`pvframe.platform.loader.ImageError` for an image the loader refuses and
    :class:`pvframe.plugins.BackendError` for a backend that is missing or broken."""
    machine, result, log = _execute(rec.backend, rec.image, rec.load, rec.config,
                                    rec.max_instructions, wall_clock_s)
    if result.stop == STOP_WALL and rec.stop != STOP_WALL:
        return ReplayResult(
            False, len(log.calls),
            f"the replay ran out of host time ({wall_clock_s} s) after "
            f"{result.instructions:,} of at most {rec.max_instructions:,} instructions; "
            f"the recording stopped as {rec.stop}")
    for i, (old, new) in enumerate(zip(rec.calls, log.calls, strict=False)):
        if list(old) != list(new):
            return ReplayResult(False, i, f"hook call {i}: recorded {old}, replayed {new}")
    if len(rec.calls) != len(log.calls):
        return ReplayResult(False, min(len(rec.calls), len(log.calls)),
                            f"recorded {len(rec.calls)} hook calls, replayed {len(log.calls)}")
    digest = state_digest(machine, result)
    if digest != rec.digest:
        return ReplayResult(False, len(log.calls), "final state differs (registers, console or memory)")
    return ReplayResult(True, len(log.calls), None)


def save(rec: Recording, path: Path) -> None:
    Path(path).write_text(rec.to_json())


def load(path: Path) -> Recording:
    return Recording.from_json(Path(path).read_text())
