"""`Composite`: a weighted sum of reward terms, and `make_reward` to build one from a config."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rewards import terms as reward_terms
from rewards.transition import Transition

__all__ = ["DEFAULT_REWARDS", "TERMS", "Composite", "RewardConfig", "Term", "make_reward"]

Term = Callable[[Transition], float | None]

# Term names accepted by `make_reward` (fixed table of the terms in rewards.terms).
TERMS: Mapping[str, Term] = {
    "progress": reward_terms.progress,
    "success": reward_terms.success,
    "wrong_stop": reward_terms.wrong_stop,
    "collision": reward_terms.collision,
    "step_cost": reward_terms.step_cost,
    "format": reward_terms.format,
    "invalid_action": reward_terms.invalid_action,
    "expert_match": reward_terms.expert_match,
    "time_decayed_match": reward_terms.time_decayed_match,
}

DEFAULT_REWARDS: Mapping[str, float] = {
    "progress": 1.0,
    "success": 10.0,
    "wrong_stop": 2.0,
    "collision": 0.1,
    "step_cost": 0.04,
    "invalid_action": 1.0,
}
"""Default weights, in forward-step units: progress is the dense signal (+1 per step closer); success 10 and
step cost 0.04 are Habitat's PointNav 2.5 success and 0.01 slack rewards (metres) rescaled to 0.25 m steps;
stopping away from the goal costs 2 steps' worth; bumping and unparseable text are penalised so the policy
learns to move freely and answer in the accepted format."""


class Composite:
    """Weighted sum of named terms.

    ``composite(t)`` returns ``(total, values)``: ``total = sum(weight * value)`` over the terms that
    apply, and ``values`` maps each applicable term's name to its unweighted value (terms returning
    ``None`` are left out of both). A term returning a non-finite value raises ``ValueError`` naming it.
    Picklable as long as its terms are (module-level functions or classes, no lambdas).
    """

    def __init__(self, terms: Sequence[tuple[str, Term, float]]) -> None:
        checked: list[tuple[str, Term, float]] = []
        for entry in terms:
            if len(entry) != 3:
                raise ValueError(f"each term must be (name, term, weight), got {entry!r}")
            name, term, weight = entry
            if not isinstance(name, str) or not name:
                raise ValueError(f"term name must be a non-empty str, got {name!r}")
            if any(name == other for other, _, _ in checked):
                raise ValueError(f"term {name!r} given twice")
            if not callable(term):
                raise ValueError(f"term {name!r} is not callable: {term!r}")
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
                raise ValueError(f"term {name!r}: weight must be a finite number, got {weight!r}")
            checked.append((name, term, float(weight)))
        self.terms: tuple[tuple[str, Term, float], ...] = tuple(checked)

    @property
    def weights(self) -> dict[str, float]:
        """Term name -> weight."""
        return {name: weight for name, _, weight in self.terms}

    def __call__(self, t: Transition) -> tuple[float, dict[str, float]]:
        total = 0.0
        values: dict[str, float] = {}
        for name, term, weight in self.terms:
            value = term(t)
            if value is None:
                continue
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"reward term {name!r} returned {value}")
            values[name] = value
            total += weight * value
        return total, values

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={weight:g}" for name, _, weight in self.terms)
        return f"Composite({inner})"


RewardConfig = (
    None
    | str
    | Mapping[str, float]
    | Sequence[tuple[str | Term, float] | tuple[str, Term, float]]
    | Composite
)


def _term_name(term: Term) -> str:
    name = getattr(term, "name", None) or getattr(term, "__name__", None) or type(term).__name__
    return str(name)


def _lookup(name: str) -> Term:
    if name not in TERMS:
        raise ValueError(f"unknown reward term {name!r}; known terms: {', '.join(TERMS)}")
    return TERMS[name]


def _parse_spec(spec: str) -> list[tuple[str, Term, float]]:
    """``"progress=1,success=10"`` -> terms (the command-line form)."""
    entries = []
    for item in filter(None, (piece.strip() for piece in spec.split(","))):
        name, sep, weight = item.partition("=")
        if not sep:
            raise ValueError(f"reward spec item {item!r} must be name=weight")
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"reward spec item {item!r}: weight {weight!r} is not a number") from None
        entries.append((name.strip(), _lookup(name.strip()), value))
    if not entries:
        raise ValueError("reward spec is empty")
    return entries


def make_reward(config: RewardConfig = None) -> Composite:
    """Build a ``Composite`` from a config.

    - ``None``: ``DEFAULT_REWARDS``;
    - a mapping ``{"progress": 1.0, "success": 10.0}`` or a string ``"progress=1,success=10"``;
    - a sequence of ``(name_or_term, weight)`` or ``(name, term, weight)``; a callable term is named by its
      ``name`` attribute, ``__name__`` or class name;
    - a ``Composite``: returned as is.

    Unknown names raise ``ValueError`` listing the known ones.
    """
    if config is None:
        config = DEFAULT_REWARDS
    if isinstance(config, Composite):
        return config
    if isinstance(config, str):
        return Composite(_parse_spec(config))
    if isinstance(config, Mapping):
        return Composite([(str(name), _lookup(str(name)), weight) for name, weight in config.items()])
    if isinstance(config, Sequence):
        entries: list[tuple[str, Term, float]] = []
        for entry in config:
            entries.append(_entry(entry))
        return Composite(entries)
    raise ValueError(f"reward config must be None, str, mapping, sequence or Composite, got {config!r}")


def _entry(entry: Any) -> tuple[str, Term, float]:
    if not isinstance(entry, Sequence) or isinstance(entry, str) or len(entry) not in (2, 3):
        raise ValueError(f"reward entry must be (term_or_name, weight) or (name, term, weight): {entry!r}")
    if len(entry) == 3:
        return entry[0], entry[1], entry[2]
    term, weight = entry
    if isinstance(term, str):
        return term, _lookup(term), weight
    if callable(term):
        return _term_name(term), term, weight
    raise ValueError(f"reward entry {entry!r}: first item must be a term name or a callable")
