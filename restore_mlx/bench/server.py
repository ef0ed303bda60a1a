"""Server benchmark: concurrent clients against ``restore_mlx.server``, reduced vs off.

Two server processes on 127.0.0.1 serve the same model: one reduces every image
prompt with ``--preset``, the other gets ``{"restore": {"off": true}}`` on every
request (mlx-vlm's own path, with the processor fix). Each has its own process so
that its peak memory (mlx's, from the responses' ``timings``) is its own. Phases
alternate between them (reduced, off, off, reduced, ...) so slow drift of the
machine lands on both alike; in a phase ``--clients`` clients each stream
``--requests`` image questions one after the other.

Reported: requests/s of each phase (median over the rounds), time to first token
(TTFT: request sent to first content chunk) p50/p95 over every request, peak memory,
and a two-turn chat about a fresh copy of the image: turn 2 re-sends turn 1 and the
answer, TTFT of turn 2 vs turn 1 and the prompt tokens the prefix cache served.

    python -m restore_mlx.bench.server --model examples/probe-model \\
        --image examples/probe-scene.png --clients 4 --requests 4 --rounds 2
"""

import argparse
import base64
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ..errors import write_json_atomic

QUESTIONS = ("what color is at c4", "what color is at a1", "what shape is at b2",
             "how many circles")  # fmt: skip
OFF = {"off": True}
HOST = "127.0.0.1"  # the benchmark never listens or connects elsewhere


def configure_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m restore_mlx.bench.server",
        description="Concurrent clients against restore_mlx.server: reduced vs off.",
    )
    p.add_argument("--model", required=True, help="MLX model folder or hub id.")
    p.add_argument("--image", required=True, help="Local image the clients send.")
    p.add_argument("--preset", default="mobile-50", help="The reduced server's recipe.")
    p.add_argument("--clients", type=int, default=4, help="Concurrent clients.")
    p.add_argument("--requests", type=int, default=4, help="Requests per client.")
    p.add_argument("--rounds", type=int, default=2, help="Phases per mode.")
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--output", default=None, help="Write OUTPUT.json and OUTPUT.md.")
    return p


class Server:
    """A ``restore_mlx.server`` subprocess on a free loopback port."""

    def __init__(self, model, flags=(), log_dir=None, env=None):
        with socket.socket() as s:
            s.bind((HOST, 0))
            self.port = s.getsockname()[1]
        # A file, not a pipe: a pipe nobody reads blocks the server once full.
        self.log = tempfile.NamedTemporaryFile(
            "w+b", dir=log_dir, suffix=".log", delete=False
        )
        cmd = [sys.executable, "-m", "restore_mlx.server", "--model", str(model),
               "--host", HOST, "--port", str(self.port), *flags]  # fmt: skip
        offline = os.environ.get("HF_HUB_OFFLINE", "1")
        env = {**os.environ, "HF_HUB_OFFLINE": offline, **(env or {})}
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=self.log
        )
        self.model = str(model)

    def wait_ready(self, timeout_s=300.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log.name}")
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
                conn.request("GET", "/v1/models")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.25)
        raise RuntimeError(f"server did not start in {timeout_s:g} s")

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def image_url(path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"data:image/png;base64,{data}"


def user(text, image=None) -> dict:
    content = [{"type": "text", "text": text}]
    if image is not None:
        content.insert(0, {"type": "image_url", "image_url": {"url": image}})
    return {"role": "user", "content": content}


def stream(server, messages, restore=None, max_tokens=8, timeout_s=600) -> dict:
    """One streamed chat completion: TTFT, total time, text, usage, timings."""
    body = {"model": server.model, "messages": messages, "max_tokens": max_tokens,
            "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    if restore is not None:
        body["restore"] = restore
    conn = http.client.HTTPConnection(HOST, server.port, timeout=timeout_s)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json"})  # fmt: skip
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:500]!r}")
    out = {"ttft_s": None, "text": "", "usage": None, "timings": None}
    for line in response:
        line = line.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[len("data: ") :])
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text and out["ttft_s"] is None:
                out["ttft_s"] = time.perf_counter() - start
            out["text"] += text or ""
        out["usage"] = chunk.get("usage") or out["usage"]
        out["timings"] = chunk.get("timings") or out["timings"]
    out["total_s"] = time.perf_counter() - start
    if out["ttft_s"] is None:  # no content at all: the whole request
        out["ttft_s"] = out["total_s"]
    conn.close()
    return out


def phase(server, image, restore, clients, requests, max_tokens) -> dict:
    """``clients`` threads, each streaming ``requests`` questions in turn."""
    results, errors = [], []

    def client(c):
        for i in range(requests):  # bounded
            question = QUESTIONS[(c + i) % len(QUESTIONS)]
            try:
                r = stream(server, [user(question, image)], restore, max_tokens)
                results.append(r)
            except Exception as e:  # reported, never retried
                errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed: {errors[0]}")
    return {"wall_s": wall, "requests_per_s": len(results) / wall, "requests": results}


def chat(server, image, restore, max_tokens) -> dict:
    """Two turns about ``image``; TTFT and prompt tokens of each."""
    first_q, second_q = QUESTIONS[0], QUESTIONS[2]
    one = stream(server, [user(first_q, image)], restore, max_tokens)
    history = [user(first_q, image), {"role": "assistant", "content": one["text"]}]
    two = stream(server, [*history, user(second_q)], restore, max_tokens)
    return {f"turn{i}": turn_summary(t) for i, t in ((1, one), (2, two))}


def turn_summary(r) -> dict:
    usage = r["usage"] or {}
    details = usage.get("prompt_tokens_details") or {}
    restore = usage.get("restore") or {}
    return {
        "ttft_s": r["ttft_s"],
        "prompt_tokens": usage.get("prompt_tokens"),
        "prompt_tokens_prefilled": restore.get("prompt_tokens_prefilled"),
        "cached_tokens": details.get("cached_tokens"),
    }


def percentile(values, q) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summarize(phases, chats, peaks) -> dict:
    out = {}
    for mode, runs in phases.items():
        ttft = [r["ttft_s"] for run in runs for r in run["requests"]]
        out[mode] = {
            "requests_per_s": statistics.median(r["requests_per_s"] for r in runs),
            "ttft_p50_s": percentile(ttft, 50),
            "ttft_p95_s": percentile(ttft, 95),
            "peak_memory_mb": None if peaks[mode] is None else peaks[mode] * 1e3,
            "requests": len(ttft),
            "chat": chats[mode],
        }
    return out


def peak_memory(server, image, restore, max_tokens):
    """The server process's peak memory so far (mlx's peak, never reset by mlx-vlm),
    from the ``timings`` of a non-streamed response (streams carry none)."""
    body = {"model": server.model, "messages": [user(QUESTIONS[0], image)],
            "max_tokens": max_tokens, "temperature": 0.0}  # fmt: skip
    if restore is not None:
        body["restore"] = restore
    conn = http.client.HTTPConnection(HOST, server.port, timeout=600)
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json"})  # fmt: skip
    payload = json.loads(conn.getresponse().read())
    conn.close()
    return (payload.get("timings") or {}).get("peak_memory")


def ratio(a, b):
    return a / b if a and b else None


def table(summary, config) -> str:
    """The Markdown report: each mode's numbers and reduced/off ratios."""
    red, off = summary["reduced"], summary["off"]

    def row(name, key, fmt):
        a, b = red[key], off[key]
        r = ratio(a, b)
        cell = lambda v: "n/a" if v is None else fmt.format(v)  # noqa: E731
        return (
            f"| {name} | {cell(a)} | {cell(b)} | {'n/a' if r is None else f'{r:.2f}'} |"
        )

    lines = [
        f"Server benchmark: {config['model']}, {config['clients']} clients x "
        f"{config['requests']} requests x {config['rounds']} rounds per mode, "
        f"max_tokens {config['max_tokens']}, reduced = preset {config['preset']}.",
        f"Machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs.",
        "",
        "| metric | reduced | off | reduced / off |",
        "|---|---|---|---|",
        row("requests/s (median phase)", "requests_per_s", "{:.2f}"),
        row("TTFT p50 (s)", "ttft_p50_s", "{:.3f}"),
        row("TTFT p95 (s)", "ttft_p95_s", "{:.3f}"),
        row("peak memory (MB, mlx)", "peak_memory_mb", "{:.1f}"),
        "",
        "Chat (turn 2 re-sends turn 1 and its answer; the prefix cache serves whole "
        "blocks of turn 1's prompt, APC_BLOCK_SIZE tokens each):",
        "",
        "| mode | turn 1 TTFT (s) | turn 2 TTFT (s) | turn 2 / turn 1 | "
        "turn 2 prompt tokens | served from the prefix cache |",
        "|---|---|---|---|---|---|",
    ]
    for mode in ("reduced", "off"):
        one, two = summary[mode]["chat"]["turn1"], summary[mode]["chat"]["turn2"]
        lines.append(
            f"| {mode} | {one['ttft_s']:.3f} | {two['ttft_s']:.3f} | "
            f"{two['ttft_s'] / one['ttft_s']:.2f} | "
            f"{two['prompt_tokens_prefilled'] or two['prompt_tokens']} | "
            f"{two['cached_tokens']} |"
        )
    return "\n".join(lines) + "\n"


def run(model, image, *, preset="mobile-50", clients=4, requests=4, rounds=2,
        max_tokens=8) -> dict:  # fmt: skip
    """Start both servers, run the phases and the chats, stop them; the summary."""
    reduced = Server(model, ["--preset", preset])
    off = Server(model)
    servers = {"reduced": (reduced, None), "off": (off, OFF)}
    try:
        for server, _ in servers.values():
            server.wait_ready()
        url = image_url(image)
        for server, restore in servers.values():  # warm-up: load, compile
            stream(server, [user(QUESTIONS[0], url)], restore, max_tokens)
        phases = {"reduced": [], "off": []}
        order = ["reduced", "off"]
        for r in range(rounds):
            for mode in order if r % 2 == 0 else order[::-1]:
                server, restore = servers[mode]
                phases[mode].append(
                    phase(server, url, restore, clients, requests, max_tokens)
                )
        chats = {}
        for mode, (server, restore) in servers.items():
            chats[mode] = chat(server, fresh_copy(image), restore, max_tokens)
        peaks = {
            mode: peak_memory(server, url, restore, max_tokens)
            for mode, (server, restore) in servers.items()
        }
        return summarize(phases, chats, peaks)
    finally:
        for server, _ in servers.values():
            server.close()


def fresh_copy(image) -> str:
    """The image with one pixel changed: a chat no earlier request has cached."""
    from PIL import Image

    picture = Image.open(image).convert("RGB")
    r, g, b = picture.getpixel((0, 0))
    picture.putpixel((0, 0), ((r + 1) % 256, g, b))
    with tempfile.NamedTemporaryFile(suffix=".png", delete=False) as f:
        picture.save(f.name)
    return image_url(f.name)


def main(argv=None) -> None:
    """Command-line entry point: ``python -m restore_mlx.bench.server``."""
    args = configure_parser().parse_args(argv)
    config = {k: getattr(args, k) for k in
              ("model", "preset", "clients", "requests", "rounds", "max_tokens")}  # fmt: skip
    summary = run(
        args.model, args.image, **{k: v for k, v in config.items() if k != "model"}
    )
    report = table(summary, config)
    print(report)
    if args.output:
        write_json_atomic(f"{args.output}.json", {"config": config, **summary})
        Path(f"{args.output}.md").write_text(report)


if __name__ == "__main__":
    main()
