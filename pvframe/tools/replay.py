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
import zlib
from pathlib import Path
from typing import Any

import attrs

from pvframe.hookspecs import PREFIX, all_hook_names, hookimpl
from pvframe.machine import Machine, MachineConfig, RunResult
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
    config: dict[str, int]
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
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file (format {data.get('format')!r})")
            return cls(
                data["backend"], zlib.decompress(base64.b64decode(data["image"])), data["load"],
                data["config"], data["max_instructions"],
                [tuple(c) for c in data["calls"]], data["digest"], data["stop"],
            )
        except (KeyError, ValueError, TypeError, zlib.error) as exc:
            raise ValueError(f"unreadable recording: {exc}") from None


def _execute(backend: str, image: bytes, load: dict[str, Any], config: dict[str, int],
             max_instructions: int) -> tuple[Machine, RunResult, HookLog]:
    log = HookLog()
    machine = Machine(backend, MachineConfig(**config), extra_plugins=[log])
    if load["kind"] == "raw":
        machine.load_raw(image, load["load_addr"], load.get("entry"), esp=load.get("esp"))
    else:
        machine.load_multiboot(image, cmdline=load.get("cmdline", ""), esp=load.get("esp"))
    result = machine.run(max_instructions)
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


def replay(rec: Recording) -> ReplayResult:
    """Run the recording's inputs again; compare the hook sequence and the final state."""
    machine, result, log = _execute(rec.backend, rec.image, rec.load, rec.config,
                                    rec.max_instructions)
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
