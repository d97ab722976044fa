"""Fire-module schedules: which of fire2..fire9 a pruned SqueezeNet keeps.

A schedule file is YAML, a list of schedules:

    - name: Head-1
      keep: [fire2, fire3, fire4, fire5, fire9]     # or  drop: [fire6, fire7, fire8]
      description: optional text

Generators (each documented with its rule; modules in network order F2..F9):
  head(k, offset)  drop k consecutive modules at the classifier end, `offset` modules before it
                   (head(3, 1) drops F6 F7 F8 = the paper's Head-1)
  tail(k, offset)  drop k consecutive modules at the stem end, `offset` modules after it
                   (tail(2, 1) drops F3 F4 = Tail-1)
  alt(parity)      keep the even (F2 F4 F6 F8 = Alt-1) or odd (F3 F5 F7 F9 = Alt-2) modules
  ref(scores, k)   keep the k most salient modules (a saliency ranking: module -> score)
No torch here: schedules are data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from firecut.errors import FirecutError

FIRE_NAMES: tuple[str, ...] = tuple(f"fire{i}" for i in range(2, 10))  # = models.squeezenet


@dataclass(frozen=True)
class Schedule:
    name: str
    keep: tuple[str, ...]  # kept Fire modules, in network order
    description: str = field(default="", compare=False)

    @property
    def drop(self) -> tuple[str, ...]:
        return tuple(m for m in FIRE_NAMES if m not in self.keep)

    def pattern(self) -> str:
        """'✓ ✓ – ...' per module F2..F9, as in the paper's Table 3."""
        return " ".join("✓" if m in self.keep else "–" for m in FIRE_NAMES)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "keep": list(self.keep)}
        if self.description:
            d["description"] = self.description
        return d


def _in_order(modules: Iterable[str]) -> tuple[str, ...]:
    chosen = set(modules)
    return tuple(m for m in FIRE_NAMES if m in chosen)


def parse_schedules(data: Any, source: str = "<schedules>") -> list[Schedule]:
    """Validates parsed YAML; every error names the source, the schedule and the problem."""
    if data is None:
        raise FirecutError(f"{source}: empty schedule file; expected a list of schedules "
                           "(- name: ..., keep: [...])")
    if isinstance(data, dict) and "schedules" in data:
        data = data["schedules"]
    if not isinstance(data, list) or not data:
        raise FirecutError(f"{source}: expected a non-empty list of schedules, "
                           f"got {type(data).__name__}")
    out: list[Schedule] = []
    seen: set[str] = set()
    for i, item in enumerate(data, 1):
        where = f"{source}: schedule #{i}"
        if not isinstance(item, dict):
            raise FirecutError(f"{where}: expected a mapping with name and keep/drop")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise FirecutError(f"{where}: missing 'name'")
        where = f"{source}: schedule '{name}'"
        unknown_keys = set(item) - {"name", "keep", "drop", "description"}
        if unknown_keys:
            raise FirecutError(f"{where}: unknown key(s) {sorted(unknown_keys)}; "
                               "use name, keep or drop, description")
        if name in seen:
            raise FirecutError(f"{where}: duplicate schedule name")
        seen.add(name)
        if ("keep" in item) == ("drop" in item):
            raise FirecutError(f"{where}: give exactly one of 'keep' or 'drop'")
        key = "keep" if "keep" in item else "drop"
        modules = item[key] if item[key] is not None else []
        if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
            raise FirecutError(f"{where}: '{key}' must be a list of module names")
        unknown = [m for m in modules if m not in FIRE_NAMES]
        if unknown:
            raise FirecutError(f"{where}: unknown module(s) {', '.join(unknown)}; "
                               f"SqueezeNet has {', '.join(FIRE_NAMES)}")
        if len(set(modules)) != len(modules):
            raise FirecutError(f"{where}: a module is listed twice in '{key}'")
        keep = _in_order(modules) if key == "keep" else _in_order(set(FIRE_NAMES) - set(modules))
        out.append(Schedule(name, keep, str(item.get("description") or "")))
    return out


def load_schedules(path: str | Path) -> list[Schedule]:
    path = Path(path)
    if not path.is_file():
        shipped = shipped_dir() / path.name
        if not path.parent.parts and shipped.is_file():  # a bare name: a shipped file
            path = shipped
        else:
            raise FirecutError(f"schedule file {path} does not exist (shipped: "
                               f"{', '.join(p.name for p in shipped_files())})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        raise FirecutError(f"{path}: not valid YAML{at}") from None
    except UnicodeDecodeError:
        raise FirecutError(f"{path}: not a text file") from None
    return parse_schedules(data, str(path))


def dump_schedules(schedules: Iterable[Schedule]) -> str:
    return yaml.safe_dump([s.to_dict() for s in schedules], sort_keys=False,
                          default_flow_style=None, allow_unicode=True)


def shipped_dir() -> Path:
    """The installed package's own schedule files (package data; the checkout's top-level
    schedules/ is a link to the same folder)."""
    from importlib.resources import files

    return Path(str(files("firecut"))) / "pruning" / "data"


def shipped_files() -> list[Path]:
    return sorted(shipped_dir().glob("*.yaml"))


# ------------------------------------------------------------------------------ generators


def head(k: int, offset: int = 0) -> Schedule:
    """Drop k consecutive modules ending `offset` modules before the classifier."""
    _check_span(k, offset)
    end = len(FIRE_NAMES) - offset
    dropped = FIRE_NAMES[end - k:end]
    return _dropping(f"head-{k}", offset, dropped, "classifier end")


def tail(k: int, offset: int = 0) -> Schedule:
    """Drop k consecutive modules starting `offset` modules after the stem."""
    _check_span(k, offset)
    dropped = FIRE_NAMES[offset:offset + k]
    return _dropping(f"tail-{k}", offset, dropped, "stem end")


def alt(parity: str = "even") -> Schedule:
    """Keep every other module: even (F2 F4 F6 F8) or odd (F3 F5 F7 F9)."""
    if parity not in ("even", "odd"):
        raise FirecutError(f"alt parity must be even or odd, not '{parity}'")
    start = 0 if parity == "even" else 1
    return Schedule(f"alt-{parity}", FIRE_NAMES[start::2], f"keep the {parity} Fire modules")


def ref(scores: dict[str, float], k: int) -> Schedule:
    """Keep the k modules with the highest saliency scores."""
    unknown = [m for m in scores if m not in FIRE_NAMES]
    if unknown:
        raise FirecutError(f"saliency scores name unknown module(s) {', '.join(unknown)}")
    if not 0 <= k <= len(scores):
        raise FirecutError(f"--keep must be in 0..{len(scores)} (modules with a score)")
    top = sorted(scores, key=lambda m: (-scores[m], FIRE_NAMES.index(m)))[:k]
    return Schedule(f"ref-{k}", _in_order(top), f"keep the {k} most salient modules")


def _dropping(name: str, offset: int, dropped: tuple[str, ...], end: str) -> Schedule:
    return Schedule(name + (f"-o{offset}" if offset else ""),
                    _in_order(set(FIRE_NAMES) - set(dropped)),
                    f"drop {' '.join(dropped) or 'nothing'} ({end}, offset {offset})")


def _check_span(k: int, offset: int) -> None:
    if k < 0 or offset < 0 or k + offset > len(FIRE_NAMES):
        raise FirecutError(f"k={k}, offset={offset}: need k >= 0, offset >= 0 and "
                           f"k + offset <= {len(FIRE_NAMES)}")
