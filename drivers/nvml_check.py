"""``python -m wattshift.drivers.nvml_check``: try the NVML driver on this host's real GPUs.

Lists the GPUs, reads power and limits, watches the energy counter for a couple of seconds
(the average it implies beside the instantaneous reading), sets a limit, reads it back, and
always puts the original limit back, whatever happened. Setting a limit needs root; without it
the report says so and the rest still runs. ``--json`` prints the same report as JSON. The exit
status is 0 when every step worked, 1 on any failure (each named on stderr), 2 without NVML.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from wattshift.model.gpu import GpuReading

from .base import DeviceError
from .nvml_gpu import NvmlGpus, NvmlUnavailable, average_watts


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m wattshift.drivers.nvml_check", description=__doc__
    )
    parser.add_argument("--gpu", action="append", help="index or UUID (repeat; default: all)")
    parser.add_argument(
        "--watts", type=float, help="limit to try (default: midway between min and current)"
    )
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="energy counter window (default 2)"
    )
    parser.add_argument("--no-set", action="store_true", help="read only; change no limit")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if not args.seconds > 0:
        parser.error(f"--seconds: {args.seconds!r} must be positive")
    return args


def _selection(raw: list[str] | None) -> Any:
    if not raw:
        return "all"
    return [int(item) if item.isdigit() else item for item in raw]


def _reading(r: GpuReading | DeviceError) -> dict[str, Any]:
    if isinstance(r, DeviceError):
        return {"error": str(r), "failure": r.failure.value}
    return asdict(r)


async def _try_limit(driver: NvmlGpus, r: GpuReading, watts: float | None) -> dict[str, Any]:
    """Set a limit, read it back, and put the original one back whatever happened."""
    if r.limits is None or r.limit_watts is None:
        return {"skipped": "the card reports no power limit constraints"}
    original = r.limit_watts
    wanted = watts if watts is not None else round((r.limits.min_watts + original) / 2)
    out: dict[str, Any] = {"original_watts": original, "wanted_watts": wanted}
    failed = False
    try:
        out["enforced_watts"] = await driver.set_power_limit(r.uuid, wanted)
        out["read_back"] = driver.limit_read_back(r.uuid)
        after = (await driver.read_all())[r.uuid]
        if isinstance(after, GpuReading):
            out["read_back_watts"] = after.limit_watts
            out["read_back_enforced_watts"] = after.enforced_limit_watts
    except DeviceError as exc:
        out["error"] = str(exc)
        failed = True
    finally:
        await _restore(driver, r.uuid, original, out, after_failure=failed)
    return out


async def _restore(
    driver: NvmlGpus, uuid: str, original: float, out: dict[str, Any], *, after_failure: bool
) -> None:
    """The card back at ``original``. After a failed set, a card that still reads ``original``
    was never changed (a refused set): nothing to put back. Anything else, an unreadable
    card included, gets the original limit, past the driver's refusals of later sets."""
    if after_failure:
        now = (await driver.read_all())[uuid]
        if isinstance(now, GpuReading) and now.limit_watts == original:
            out["unchanged_watts"] = original
            return
    try:
        out["restored_watts"] = await driver.restore_limit(uuid, original)
    except DeviceError as exc:
        out["restore_error"] = str(exc)


def failures(report: dict[str, Any]) -> list[str]:
    """Every failure in a report, one line each: any one makes the check exit 1."""
    found: list[str] = []
    if not report["gpus"]:
        found.append("no GPUs found")
    for uuid, entry in report["gpus"].items():
        if "error" in entry["reading"]:
            found.append(f"{uuid}: read: {entry['reading']['error']}")
        tried = entry.get("set_limit") or {}
        for key, what in (("error", "set"), ("restore_error", "restore")):
            if key in tried:
                found.append(f"{uuid}: {what}: {tried[key]}")
    return found


async def check(args: argparse.Namespace) -> dict[str, Any]:
    driver = NvmlGpus(_selection(args.gpu), call_timeout_seconds=10.0, name="nvml-check")
    report: dict[str, Any] = {"gpus": {}}
    try:
        uuids = await driver.start()
        t0 = time.monotonic()
        first = await driver.read_all()
        await asyncio.sleep(args.seconds)
        second = await driver.read_all()
        elapsed = time.monotonic() - t0
        for uuid in uuids:
            a, b = first[uuid], second[uuid]
            entry: dict[str, Any] = {"reading": _reading(b)}
            if isinstance(a, GpuReading) and isinstance(b, GpuReading):
                entry["energy_window_s"] = round(elapsed, 3)
                entry["energy_delta_joules"] = (
                    None
                    if a.energy_joules is None or b.energy_joules is None
                    else round(b.energy_joules - a.energy_joules, 3)
                )
                entry["average_watts"] = average_watts(a.energy_joules, b.energy_joules, elapsed)
                if not args.no_set:
                    entry["set_limit"] = await _try_limit(driver, b, args.watts)
            report["gpus"][uuid] = entry
    finally:
        await driver.close()
    return report


def _text(report: dict[str, Any]) -> str:
    lines: list[str] = []
    if not report["gpus"]:
        lines.append("no GPUs found")
    for uuid, entry in report["gpus"].items():
        r = entry["reading"]
        if "error" in r:
            lines += [f"{uuid}: {r['error']}", ""]
            continue
        limits = r["limits"] or {}
        lines.append(f"GPU {r['index']}  {r['model']}  {uuid}")
        lines.append(f"  power now          {_w(r['watts'])}")
        avg = entry.get("average_watts")
        lines.append(
            f"  energy counter     {_num(r['energy_joules'], 'J')} (+{_num(entry.get('energy_delta_joules'), 'J')} "
            f"in {entry.get('energy_window_s')} s = {_w(avg)} average)"
        )
        lines.append(
            f"  limit constraints  {_w(limits.get('min_watts'))} .. {_w(limits.get('max_watts'))}"
            f" (default {_w(limits.get('default_watts'))})"
        )
        lines.append(
            f"  limit / enforced   {_w(r['limit_watts'])} / {_w(r['enforced_limit_watts'])}"
        )
        lines.append(
            f"  utilisation, temp  {_num(r['utilisation_pct'], '%')}, {_num(r['temperature_c'], 'C')};"
            f" processes {list(r['processes']) or 'none'}"
        )
        s = entry.get("set_limit")
        if s:
            if "skipped" in s:
                lines.append(f"  set limit          skipped: {s['skipped']}")
            elif "error" in s:
                lines.append(f"  set {_w(s['wanted_watts'])}       FAILED: {s['error']}")
            else:
                lines.append(
                    f"  set {_w(s['wanted_watts'])}       read back {_w(s.get('read_back_watts'))},"
                    f" enforced {_w(s.get('read_back_enforced_watts'))}"
                )
            if "read_back" in s and s["read_back"] != "enforced":
                lines.append(f"  read back from     the {s['read_back']} limit (no enforced-limit call)")
            if "unchanged_watts" in s:
                lines.append(f"  unchanged          {_w(s['unchanged_watts'])}: nothing to restore")
            if "restored_watts" in s:
                lines.append(
                    f"  restored           {_w(s['original_watts'])} (read back {_w(s['restored_watts'])})"
                )
            if "restore_error" in s:
                lines.append(
                    f"  RESTORE FAILED     {s['restore_error']}: set {_w(s['original_watts'])} by hand"
                )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _num(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{value:.1f} {unit}"


def _w(value: float | None) -> str:
    return _num(value, "W")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        report = asyncio.run(check(args))
    except NvmlUnavailable as exc:
        print(f"nvml_check: {exc.detail}", file=sys.stderr)
        return 2
    print(
        json.dumps(report, indent=2) if args.json else _text(report),
        end="" if not args.json else "\n",
    )
    found = failures(report)
    for line in found:
        print(f"nvml_check: FAILED: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
