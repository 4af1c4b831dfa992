"""How long to warm up and how many samples to take: presets and their overrides.

Samples are taken in blocks. Consecutive calls are not independent (clocks, caches and the allocator drift
together), so the block, not the call, is the unit the verdict's statistics count: a block's median is one
observation. Sampling stops once the median of the block medians is known to the target relative uncertainty,
or when the scope's time cap is reached.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

FEWEST_BLOCKS = 10  # a time-capped minimum never comes below this: the ``standard`` preset's own minimum


@dataclass(frozen=True)
class SamplingPlan:
    block_size: int  # timed calls per block
    min_blocks: int  # never fewer blocks than this
    max_blocks: int  # never more
    target: float  # stop once the relative standard error of the median is at most this
    max_seconds: float  # time cap for one scope's sampling, warm-up excluded
    warmup_calls: int  # at least this many untimed calls first
    warmup_seconds: float  # cap on waiting for GPU clocks and call times to settle
    min_blocks_seconds: float | None = None  # where set, min_blocks asks no more than this many seconds of calls

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.min_blocks < 2 or self.max_blocks < self.min_blocks:
            raise ValueError(
                "sampling needs block >= 1, min-blocks >= 2 and max-blocks >= min-blocks (got "
                f"block={self.block_size}, min-blocks={self.min_blocks}, max-blocks={self.max_blocks})"
            )
        if not (0 < self.target < 1) or self.max_seconds <= 0 or self.warmup_calls < 0 or self.warmup_seconds < 0:
            raise ValueError("sampling needs 0 < target < 1, max-seconds > 0, warmup-calls >= 0, warmup-seconds >= 0")
        if self.min_blocks_seconds is not None and not (0 < self.min_blocks_seconds < math.inf):
            raise ValueError("sampling needs min-blocks-seconds > 0 and finite")

    def fewest_blocks(self, call_ms: float | None, block_size: int) -> int:
        """The blocks a scope takes at least: ``min_blocks``, or fewer (never below FEWEST_BLOCKS) where that many
        blocks of ``block_size`` calls of ``call_ms`` (the warm-up's) would take more than ``min_blocks_seconds``."""
        if self.min_blocks_seconds is None or not call_ms or call_ms <= 0:
            return self.min_blocks
        by_time = math.ceil(self.min_blocks_seconds * 1000.0 / (call_ms * block_size))
        return min(self.min_blocks, max(FEWEST_BLOCKS, by_time))


PRESETS: dict[str, SamplingPlan] = {
    # For CPU runs in CI and for the plugin's own tests: a few seconds a case.
    # Six blocks a side are the fewest with which the verdict's test can reach p < 0.002; one spare.
    "quick": SamplingPlan(block_size=2, min_blocks=7, max_blocks=16, target=0.05, max_seconds=2.0,
                          warmup_calls=2, warmup_seconds=1.0),
    # The gate's default: at most a few seconds a scope. A process's figure needs to be known to about 1 %: processes
    # differ by more than that on the host-bound scopes, and the GPU-only scope gets there within the first blocks.
    "standard": SamplingPlan(block_size=10, min_blocks=10, max_blocks=80, target=0.01, max_seconds=2.0,
                             warmup_calls=10, warmup_seconds=2.0),
    # Head to head taking turns (lockstep.py), unless a plan is given: a block is one call, so that the two sides
    # alternate call by call. The lent H200's launching core flips between a fast and a 1.8x slower state within tens
    # of milliseconds; calls a few milliseconds apart share it more often than 50 ms blocks do (docs/pr-gate.md,
    # fourth session: device pair noise 0.08-0.09 % against 0.18 %, forward and e2e 0.8-2.1 % against 2.1-2.3 %).
    # 50 calls a scope and a process: re-decided offline on the first 30-150 calls of the H200's torch-fp16 runs taking
    # turns (benchmarks/pr_gate.py trade, docs/pr-gate.md "Eighth session"), 150, 75 and 50 calls gave lines of 0.43,
    # 0.45 and 0.45 % device, 3.9, 4.1 and 4.0 % forward, 2.3, 3.3 and 3.5 % e2e at 4 pairs, for 48, 28 and 21 s of
    # ring a case: the pairs' own offsets, not the count of calls, are most of the noise. Capped at 3 s of calls (as
    # the warm-up times them): a GPU call of up to 60 ms keeps its 50, and ONNX Runtime's CPU calls of 114-290 ms on
    # the H200 take 27-11, for the ring is serial and those cases were estimated to be most of it (docs/pr-gate.md,
    # seventh session).
    # The warm-up is capped at 1 s a scope for the same reason; both sides warm up alike.
    "turns": SamplingPlan(block_size=1, min_blocks=50, max_blocks=1000, target=0.01, max_seconds=2.0,
                          warmup_calls=10, warmup_seconds=1.0, min_blocks_seconds=3.0),
    "thorough": SamplingPlan(block_size=20, min_blocks=20, max_blocks=400, target=0.002, max_seconds=15.0,
                             warmup_calls=30, warmup_seconds=10.0),
}

_KEYS = {
    "block": "block_size",
    "min-blocks": "min_blocks",
    "max-blocks": "max_blocks",
    "target": "target",
    "max-seconds": "max_seconds",
    "warmup-calls": "warmup_calls",
    "warmup-seconds": "warmup_seconds",
    "min-blocks-seconds": "min_blocks_seconds",
}
_FORMS = (
    f"a preset ({', '.join(PRESETS)}) optionally followed by KEY=VALUE overrides, keys: {', '.join(_KEYS)}; "
    "e.g. 'standard,max-seconds=5,target=1%'"
)


def parse_sampling(text: str) -> SamplingPlan:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"empty sampling plan: expected {_FORMS}")
    plan = PRESETS["standard"]
    if "=" not in parts[0]:
        name = parts.pop(0).lower()
        if name not in PRESETS:
            raise ValueError(f"unknown sampling preset {name!r}: expected {_FORMS}")
        plan = PRESETS[name]
    changes: dict[str, float | int] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        field_name = _KEYS.get(key.strip().lower())
        if not sep or field_name is None:
            raise ValueError(f"invalid sampling override {part!r}: expected {_FORMS}")
        value = value.strip()
        try:
            if field_name == "target":
                changes[field_name] = float(value.rstrip("%")) / (100.0 if value.endswith("%") else 1.0)
            elif field_name in ("max_seconds", "warmup_seconds", "min_blocks_seconds"):
                changes[field_name] = float(value)
            else:
                changes[field_name] = int(value)
        except ValueError:
            raise ValueError(f"invalid sampling override {part!r}: {key} takes a number") from None
    return dataclasses.replace(plan, **changes)  # type: ignore[arg-type]
