"""Run werkpool's benchmark suite and write benchmarks/results/ (markdown, JSON and a PNG).

Usage, from the repository root::

    python3 -m nox -s bench                 # everything, at the issue's sizes
    python3 -m nox -s bench -- --quick      # fewer repeats, smaller sizes
    python3 -m benchmarks.run --only rate plot
    python3 -m benchmarks.run --only server # against nginx's limit_req (needs nginx)
    python3 -m benchmarks.run --only limits keys provider  # issue #12's scenarios
    python3 -m benchmarks.run --only provider_truth  # issue #22's referee server
    python3 -m benchmarks.run --profile map # cProfile of one werkpool entry point

Every scenario measures werkpool and its baselines in this one process, side by side, and reports
ratios (or counts, bytes and shares of a core), never absolute times.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a script: python3 benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks import (
    idle,
    limits,
    memory,
    overhead,
    plot,
    provider,
    provider_truth,
    rate,
    server_limit,
)
from benchmarks.common import (
    ASYNCIO,
    Config,
    ScenarioResult,
    available_backends,
    installed,
    md_table,
)

if TYPE_CHECKING:
    from benchmarks.common import RateRun, Target

HERE = Path(__file__).resolve().parent
SCENARIOS = (
    "overhead",
    "rate",
    "memory",
    "idle",
    "plot",
    "server",
    "limits",
    "keys",
    "provider",
    "provider_truth",
)
PACKAGES = (
    "werkpool",
    "anyio",
    "trio",
    "uvloop",
    "aiometer",
    "aiolimiter",
    "matplotlib",
    "httpx",
    "uvicorn",
    "pyrate-limiter",
)
README_START = "<!-- bench-results:start -->"
README_END = "<!-- bench-results:end -->"
LIMITS_START = "<!-- limits-keys:start -->"
LIMITS_END = "<!-- limits-keys:end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m benchmarks.run",
        description="werkpool's benchmarks: each scenario against its baselines, in one process.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats and smaller sizes (about 2 minutes)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SCENARIOS,
        metavar="SCENARIO",
        help=f"run only these scenarios (of: {', '.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        metavar="BACKEND",
        help="limit to these backends (asyncio, asyncio+uvloop, trio; default: all installed)",
    )
    parser.add_argument("--repeats", type=int, help="rounds of the overhead scenario")
    parser.add_argument("--rate-repeats", type=int, help="repeats of each rate run")
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="where to write the results"
    )
    parser.add_argument(
        "--no-readme", action="store_true", help="do not update benchmarks/README.md's table"
    )
    parser.add_argument(
        "--profile",
        choices=("run", "map", "start_soon", *limits.PROFILES),
        help="instead of the suite, print a cProfile of this werkpool entry point (scenario 1), "
        "or of start_soon() under three limits or with 10,000 keys (scenarios 7 and 8)",
    )
    parser.add_argument(
        "--profile-job",
        choices=tuple(overhead.JOBS),
        default="trivial",
        help="the job to profile with (default: trivial)",
    )
    return parser.parse_args(argv)


def _command() -> str:
    """The command that produced this run, as the nox session or the user typed it."""
    from_nox = os.environ.get("WERKPOOL_BENCH_COMMAND")
    if from_nox:
        return from_nox
    return shlex.join(["python3", "-m", "benchmarks.run", *sys.argv[1:]])


def _environment() -> dict[str, Any]:
    versions: dict[str, str] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_before": _load(),
        "commit": commit,
        "packages": versions,
    }


def _load() -> list[float] | None:
    """The 1, 5 and 15 min load averages: other work on the machine shows here."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # not on Windows
        return None


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def render(
    command: str,
    env: dict[str, Any],
    cfg: Config,
    results: list[ScenarioResult],
    elapsed: float,
) -> str:
    """The markdown report: the command on top, the targets, then one section per scenario."""
    titles = {
        "overhead": "1. Overhead",
        "rate": "2. Rate accuracy",
        "memory": "3. Memory",
        "idle": "4. Idle cost",
        "plot": "5. The picture",
        "server": "6. Against a server's rate limit (nginx `limit_req`)",
        "limits": "7. Three limits",
        "keys": "8. Many keys",
        "provider": "9. An LLM provider on uvicorn: requests, tokens, keys and 429s",
        "provider_truth": "12. The referee's provider (#22): scoped 429s, a hot key, headers",
    }
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v != "not installed")
    mode = "quick" if cfg.quick else "full"
    lines = [
        f"`{command}`",
        "",
        f"{mode} run, {datetime.date.today().isoformat()}, {elapsed / 60:.1f} min; "
        f"{env['implementation']} {env['python']} on {env['platform']}, {env['cpus']} CPUs, "
        f"load average {_fmt_load(env['load_before'])} before and {_fmt_load(env['load_after'])} "
        "after (1 / 5 / 15 min); "
        f"commit {env['commit'] or 'unknown'}; {packages}.",
    ]
    targets: list[Target] = [t for r in results for t in r.targets]
    if targets:
        missed = sum(not t.ok for t in targets)
        lines += [
            "",
            f"### Targets: {len(targets) - missed} met, {missed} missed",
            "",
            md_table(
                ["scenario", "what", "target", "measured", ""],
                [
                    [t.scenario, t.what, t.goal, t.measured, "ok" if t.ok else "**MISSED**"]
                    for t in targets
                ],
            ),
        ]
    for result in results:
        lines += ["", f"### {titles.get(result.name, result.name)}", "", result.markdown]
    return "\n".join(lines) + "\n"


def _fmt_load(load: list[float] | None) -> str:
    return "n/a" if load is None else " / ".join(f"{x:.2f}" for x in load)


def update_readme(report: str) -> None:
    # The report's links are relative to results/; the README sits one level up.
    report = report.replace("](rate_accuracy.png)", "](results/rate_accuracy.png)")
    replace_block(README_START, README_END, report)


def replace_block(start: str, end: str, body: str) -> None:
    """Replace what stands between the markers *start* and *end* in benchmarks/README.md."""
    readme = HERE / "README.md"
    if not readme.exists():
        return
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        return
    block = f"{start}\n{body.rstrip()}\n{end}"
    readme.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")


def write_limits_keys(
    command: str,
    env: dict[str, Any],
    cfg: Config,
    results: list[ScenarioResult],
    out: Path,
    elapsed: float,
) -> None:
    """``limits_keys.md`` and ``.json``: scenarios 7 and 8 alone, as this run measured them
    (*elapsed*: the whole run's length)."""
    out.mkdir(parents=True, exist_ok=True)
    report = render(command, env, cfg, results, elapsed)
    (out / "limits_keys.md").write_text(report, encoding="utf-8")
    payload = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if cfg.quick else "full",
        "environment": env,
        "targets": [t.__dict__ for r in results for t in r.targets],
        "scenarios": {r.name: r.data for r in results},
    }
    (out / "limits_keys.json").write_text(
        json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backends = available_backends()
    if args.backends:
        unknown = set(args.backends) - {b.label for b in backends}
        if unknown:
            raise SystemExit(f"unknown or uninstalled backends: {', '.join(sorted(unknown))}")
        backends = [b for b in backends if b.label in args.backends]
    cfg = Config.make(quick=args.quick, backends=backends)
    if args.repeats:
        cfg.repeats = args.repeats
    if args.rate_repeats:
        cfg.rate_repeats = args.rate_repeats

    if args.profile in limits.PROFILES:
        print(limits.profile(args.profile, args.profile_job, cfg.overhead_jobs))
        return 0
    if args.profile:
        print(overhead.profile(args.profile, args.profile_job, cfg.overhead_jobs))
        return 0

    selected = args.only or list(SCENARIOS)
    command = _command()
    env = _environment()
    started = time.perf_counter()
    results: list[ScenarioResult] = []
    rate_runs: dict[tuple[float, str, str], list[RateRun]] | None = None
    _log(f"werkpool benchmarks ({'quick' if cfg.quick else 'full'}): {', '.join(selected)}")
    for name in SCENARIOS:
        if name not in selected:
            continue
        _log(f"{name} (at {(time.perf_counter() - started) / 60:.1f} min):")
        if name == "overhead":
            results.append(overhead.run(cfg))
        elif name == "rate":
            result, rate_runs = rate.run(cfg)
            results.append(result)
        elif name == "memory":
            results.append(memory.run(cfg))
        elif name == "idle":
            results.append(idle.run(cfg))
        elif name == "plot":
            results += draw_plot(cfg, args.out, rate_runs)
        elif name == "server":
            results.append(
                server_limit.run(
                    cfg.backends,
                    quick=cfg.quick,
                    out=args.out,
                    # Its own section of the README, which any full-size run of it may replace.
                    readme=not args.no_readme and args.out == HERE / "results",
                    command=command,
                    seed=cfg.seed,
                )
            )
        elif name == "limits":
            results.append(limits.run_three_limits(cfg))
        elif name == "keys":
            results.append(limits.run_many_keys(cfg))
        elif name == "provider":
            results.append(
                provider.run(
                    quick=cfg.quick,
                    out=args.out,
                    # Its own section of the README, which any full-size run of it may replace.
                    readme=not args.no_readme and args.out == HERE / "results",
                    command=command,
                    seed=cfg.seed,
                )
            )
        elif name == "provider_truth":
            results.append(
                provider_truth.run(
                    quick=cfg.quick,
                    backends=[b for b in cfg.backends if not b.uvloop],
                    out=args.out,
                    # Its own section of the README, which any full-size run of it may replace.
                    readme=not args.no_readme and args.out == HERE / "results",
                    command=command,
                    seed=cfg.seed,
                )
            )

    elapsed = time.perf_counter() - started
    env["load_after"] = _load()
    report = render(command, env, cfg, results, elapsed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(report, encoding="utf-8")
    payload = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if cfg.quick else "full",
        "elapsed_s": elapsed,
        "environment": env,
        "targets": [t.__dict__ for r in results for t in r.targets],
        "scenarios": {r.name: r.data for r in results},
    }
    (args.out / "results.json").write_text(
        json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8"
    )
    if not args.no_readme and not args.only and args.out == HERE / "results":
        update_readme(report)
    own = [r for r in results if r.name in ("limits", "keys")]
    if own:
        # Scenarios 7 and 8 also get their own report (like 6 and 9), and their README section
        # from any full-size run of them that writes to results/.
        write_limits_keys(command, env, cfg, own, args.out, elapsed)
        if not args.no_readme and not cfg.quick and args.out == HERE / "results":
            replace_block(
                LIMITS_START,
                LIMITS_END,
                render(command, env, cfg, own, elapsed).replace("### ", "#### "),
            )
    print(report)
    _log(f"wrote {args.out / 'results.md'} and results.json in {elapsed / 60:.1f} min")
    return 0


def draw_plot(
    cfg: Config, out: Path, rate_runs: dict[tuple[float, str, str], list[RateRun]] | None
) -> list[ScenarioResult]:
    if not installed("matplotlib"):
        _log("  plot: matplotlib is not installed, skipped")
        return []
    target = cfg.plot_rate
    if rate_runs is None or not any(key[0] == target for key in rate_runs):
        _log(f"  plot: collecting one run per implementation at {target:g}/s")
        own = Config.make(quick=cfg.quick, backends=[ASYNCIO])
        rate_runs = rate.collect(own, (target,), 1)
    chosen = {
        key: runs[0]
        for (r, key, backend), runs in rate_runs.items()
        if r == target and backend == ASYNCIO.label
    }
    path = out / "rate_accuracy.png"
    plot.draw(chosen, target, path, ASYNCIO.label)
    _log(f"  plot: wrote {path}")
    return [
        ScenarioResult(
            "plot",
            f"Start times on the jobs' own clock at {target:,g}/s on asyncio, first repeat "
            f"(`{path.name}`): against the job's index beside the ideal line, their distance "
            "from it, and the distribution of the gaps between consecutive starts:\n\n"
            f"![start time against job index]({path.name})",
        )
    ]


if __name__ == "__main__":
    sys.exit(main())
