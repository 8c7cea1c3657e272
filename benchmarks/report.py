"""Run the core benchmarks and print the README's performance table (medians, same run).

    python benchmarks/report.py            # full sizes (several minutes)
    python benchmarks/report.py out.json   # only format an existing --benchmark-json file
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import date


def _run(path: str) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    cmd = [sys.executable, "-m", "pytest", here, "-q", "-p", "no:cacheprovider",
           "--benchmark-enable", "--benchmark-only", f"--benchmark-json={path}",
           "--benchmark-min-rounds=5", "-o", "addopts="]
    done = subprocess.run(cmd, cwd=here)
    if done.returncode not in (0, 1):  # 1: some benchmark failed; still report the rest
        raise SystemExit(done.returncode)


def _fmt_time(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def load(path: str) -> dict[str, dict[str, dict]]:
    data = json.load(open(path))
    groups: dict[str, dict[str, dict]] = {}
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        impl = info.get("impl", b["name"])
        ops = info.get("ops_per_call", 1)
        # Measured outside pytest-benchmark's timer (a child process): taken as reported.
        median = info["seconds_per_op"] if "seconds_per_op" in info else b["stats"]["median"] / ops
        groups.setdefault(b["group"], {})[impl] = {"median": median, **info}
    return groups


def ratio(groups, group, slow, fast, subtract=None) -> float | None:
    g = groups.get(group, {})
    if slow not in g or fast not in g:
        return None
    base = g[subtract]["median"] if subtract and subtract in g else 0.0
    return (g[slow]["median"] - base) / max(g[fast]["median"] - base, 1e-12)


def _info(groups, group, impl, key) -> float | None:
    """A figure a benchmark recorded itself (a share of a ceiling or quota)."""
    value = groups.get(group, {}).get(impl, {}).get(key)
    return None if value is None else float(value)


def _coordination_tables(groups) -> list[str]:
    """Acquire cost local vs Redis, and a limit shared by 4 processes (bench_coordination)."""
    lines: list[str] = []
    cost = groups.get("coordination: acquire cost", {})
    ping = cost.get("redis-py PING (the round trip alone)", {}).get("median")
    if cost:
        lines += ["", "| acquire, one process, loopback Redis | median | vs one PING |", "|---|---|---|"]
        for impl, row in sorted(cost.items(), key=lambda kv: kv[1]["median"]):
            rel = f"{row['median'] / ping:.2f}×" if ping else ""
            lines.append(f"| {impl} | {_fmt_time(row['median'])} | {rel} |")
    shared = next((g for name, g in groups.items() if name.startswith("coordination: 4 processes")), {})
    if shared:
        lines += ["", "| 4 processes × 2 threads, one limit of 200/s | steady rate (share) | "
                      "most in any 1 s (allowed) | round trips per grant |", "|---|---|---|---|"]
        for impl, row in shared.items():
            lines.append(f"| {impl} | {row['steady_rate']:.1f}/s ({row['rate_fraction']:.1%}) | "
                         f"{row['max_in_1s']} ({row['allowed_in_1s']:.0f}) | "
                         f"{row['round_trips_per_grant']:.2f} |")
    return lines


def render(groups) -> str:
    lines = [f"Measured {date.today().isoformat()} on {platform.machine()}, "
             f"{os.cpu_count()} cores, Python {platform.python_version()} "
             f"(`python benchmarks/report.py`). Medians; time per operation.", ""]
    lines.append("| benchmark | implementation | median | vs ours (C twin) |")
    lines.append("|---|---|---|---|")
    for group, impls in groups.items():
        if "accuracy" in group or "limits vs emulator" in group or group.startswith("coordination:"):
            continue
        c = impls.get("c", {}).get("median") or impls.get("ipfs_accelerate_api", {}).get("median")
        for impl, row in sorted(impls.items(), key=lambda kv: kv[1]["median"]):
            rel = f"{row['median'] / c:.1f}×" if c else ""
            mem = f" (peak {row['peak_bytes'] / 2**20:.0f} MiB)" if "peak_bytes" in row else ""
            lines.append(f"| {group} | {impl}{mem} | {_fmt_time(row['median'])} | {rel} |")
    acc = [g for g in groups if "accuracy" in g]
    if acc:
        lines += ["", "| limiter at 200/s, capacity=1 | most in any 1 s | first second | "
                      "steady rate (share of 200/s) |", "|---|---|---|---|"]
        for impl, row in groups[acc[0]].items():
            lines.append(f"| {impl} | {row['max_in_1s']} | {row['first_second']} | "
                         f"{row['steady_rate']:.1f}/s ({row['rate_fraction']:.1%}) |")
    lim = groups.get("client: limits vs emulator", {})
    if lim:
        lines += ["", "| client told the server's limit (1,200 rpm) | 429s received | steady rate "
                      "(share of the limit) |", "|---|---|---|"]
        for impl, row in lim.items():
            lines.append(f"| {impl} | {row['sent_429']} | {row['steady_rate']:.2f}/s "
                         f"({row['rate_fraction']:.1%}) |")
    lines += _coordination_tables(groups)
    seq, emb, par = "client: chat, sequential", "client: embed 8 x 384", "client: chat, 8 threads"
    t = [
        ("chat vs raw urllib3, sequential (≤1.25× its time)",
         ratio(groups, seq, "ipfs_accelerate_api", "raw urllib3")),
        ("chat: openai SDK time / ours (≥3.5×)", ratio(groups, seq, "openai SDK", "ipfs_accelerate_api")),
        ("chat: litellm time / ours (≥15×)", ratio(groups, seq, "litellm", "ipfs_accelerate_api")),
        ("embed 8×384, float answer: openai SDK time / ours (≥10×)",
         ratio(groups, emb, "openai SDK (float answer, to numpy)", "ipfs_accelerate_api (float answer)")),
        ("embed 8×384, base64 answer: openai SDK time / ours",
         ratio(groups, emb, "openai SDK (base64 answer, to numpy)", "ipfs_accelerate_api (base64 answer)")),
        ("8-thread throughput, share of raw urllib3's (≥0.9)",
         ratio(groups, par, "raw urllib3", "ipfs_accelerate_api")),
        ("claude chat vs raw urllib3 (≤1.25× its time)",
         ratio(groups, "client: claude chat, sequential", "ipfs_accelerate_api", "raw urllib3")),
        ("claude chat: anthropic SDK time / ours (≥2.5×)",
         ratio(groups, "client: claude chat, sequential", "anthropic SDK", "ipfs_accelerate_api")),
        ("gemini chat vs raw urllib3 (≤1.25× its time)",
         ratio(groups, "gemini: chat, sequential", "ipfs_accelerate_api", "raw urllib3")),
        ("gemini chat: google-genai SDK time / ours (≥3×)",
         ratio(groups, "gemini: chat, sequential", "google-genai SDK", "ipfs_accelerate_api")),
        ("ovms infer, interleaved: vs raw urllib3 (≤1.25× its time)",
         _info(groups, "ovms: infer 1x4 FP32, interleaved", "ipfs_accelerate_api (interleaved)",
               "ours_vs_raw_urllib3")),
        ("ovms infer, interleaved: vs tritonclient.http, JSON (≤1.2× its time)",
         _info(groups, "ovms: infer 1x4 FP32, interleaved", "ipfs_accelerate_api (interleaved)",
               "ours_vs_tritonclient")),
        ("ovms infer 1×4 FP32 vs raw urllib3, sequential (≤1.25× its time)",
         ratio(groups, "ovms: infer 1x4 FP32, sequential", "ipfs_accelerate_api", "raw urllib3")),
        ("ovms infer 1×4 FP32 vs tritonclient.http, JSON, sequential (≤1.2× its time)",
         ratio(groups, "ovms: infer 1x4 FP32, sequential", "ipfs_accelerate_api",
               "tritonclient.http (JSON)")),
        ("tei embed 10k: share of the emulator's ceiling (≥0.9)",
         _info(groups, "tei: embed 10k short texts, capacity 4", "ipfs_accelerate_api",
               "share_of_ceiling")),
        ("pipeline embed_file 10k via TEI: share of the ceiling (≥0.9)",
         _info(groups, "pipeline: embed 10k short texts, capacity 4",
               "ipfs_accelerate_api embed_file (TEI)", "share_of_ceiling")),
        ("same texts, openai SDK 4 threads: share of the ceiling",
         _info(groups, "pipeline: embed 10k short texts, capacity 4",
               "openai SDK, 4 threads, batches of 32", "share_of_ceiling")),
        ("pipeline under a 600 rpm quota: share of the quota (≥0.97, zero 429s)",
         _info(groups, "pipeline: rate-limited goodput, 600 rpm",
               "ipfs_accelerate_api embed_file, rpm=600", "share_of_quota")),
        ("openai SDK retry loop under the quota: share of the quota",
         _info(groups, "pipeline: rate-limited goodput, 600 rpm",
               "openai SDK retry loop, 4 threads", "share_of_quota")),
        ("Router over one deployment vs the bare backend, interleaved (≤1.05× its time)",
         _info(groups, "router: overhead, interleaved", "Router / bare backend", "ratio")),
        ("LiteLLM Router.completion time / our Router (≥10×)",
         ratio(groups, "router: chat, sequential", "litellm Router.completion",
               "Router (simple_shuffle)")),
        ("import time: openai / ours", ratio(groups, "client: import time", "openai", "ipfs_accelerate_api")),
        ("import time: litellm / ours", ratio(groups, "client: import time", "litellm", "ipfs_accelerate_api")),
        ("queue put+get vs queue.PriorityQueue (≥10×)",
         ratio(groups, "pqueue: put+get pair", "queue.PriorityQueue", "c")),
        ("try_acquire vs pyrate-limiter (≥100×)",
         ratio(groups, "ratelimit: try_acquire", "pyrate-limiter", "c")),
        ("try_acquire vs minimal locked Python bucket (≥5×)",
         ratio(groups, "ratelimit: try_acquire", "minimal locked Python bucket", "c")),
        ("breaker allow+record_success vs pybreaker call overhead (≥20×)",
         ratio(groups, "breaker: overhead per call", "pybreaker.call", "c", "bare call")),
        ("pack_batches 1M vs pure twin (≥20×)",
         ratio(groups, "packer: pack_batches 1M lengths", "py", "c")),
        ("l2_normalize vs numpy formula (≥3×)",
         ratio(groups, "vecmath: l2_normalize 100k x 384 f32", "numpy x / norm(x, axis=1)", "c")),
        ("l2_normalize in place vs einsum in place (≥1.2×)",
         ratio(groups, "vecmath: l2_normalize 100k x 384 f32", "numpy einsum in place",
               "c in place")),
        ("top_k vs numpy matmul+argpartition (≥2×)",
         ratio(groups, "vecmath: top_k 1000 x 100k x 384 f32, k=10",
               "numpy matmul+argpartition", "c")),
        ("top_k vs faiss IndexFlatIP (≥1×)",
         ratio(groups, "vecmath: top_k 1000 x 100k x 384 f32, k=10", "faiss IndexFlatIP", "c")),
    ]
    s3_boto = "boto3 upload_file/download_file (default TransferConfig)"
    t += [  # bench_s3: against moto's server, SHA-256 included on our side
        ("s3 upload_file 256 MiB: boto3 time / ours (≥1×)",
         ratio(groups, "s3: upload_file", s3_boto, "ipfs_accelerate_api")),
        ("s3 download_file 256 MiB: boto3 time / ours (≥1×)",
         ratio(groups, "s3: download_file", s3_boto, "ipfs_accelerate_api")),
        ("s3 put_model 40 files: boto3 loop time / ours",
         ratio(groups, "s3: put_model 40 files", "loop of plain boto3 calls", "ipfs_accelerate_api")),
        ("s3 get_model 40 files: boto3 loop time / ours",
         ratio(groups, "s3: get_model 40 files", "loop of plain boto3 calls", "ipfs_accelerate_api")),
    ]
    g = groups.get("vecmath: top_k 1000 x 100k x 384 f32, k=10", {})
    if "c" in g and "numpy matmul+argpartition" in g and "peak_bytes" in g["c"]:
        t.append(("top_k peak memory: numpy / ours (≥10×)",
                  g["numpy matmul+argpartition"]["peak_bytes"] / g["c"]["peak_bytes"]))
    lines += ["", "| target | measured |", "|---|---|"]
    for name, value in t:
        shown = ("n/a" if value is None else f"{value:.1%}" if "share" in name
                 else f"{value:.2f}×" if value < 10 else f"{value:.1f}×")
        lines.append(f"| {name} | {shown} |")
    for group in ("pipeline: rate-limited goodput, 600 rpm",):
        for impl, row in groups.get(group, {}).items():
            if "sent_429" in row:
                lines.append(f"| {impl}: 429s received | {row['sent_429']} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1:
        path = sys.argv[1]
    else:
        path = os.path.join(tempfile.mkdtemp(), "bench.json")
        _run(path)
    print(render(load(path)))


if __name__ == "__main__":
    main()
