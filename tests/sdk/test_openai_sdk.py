#!/usr/bin/env python3
"""The official OpenAI Python SDK against `sluice demo`.

Run from the repository root after `cargo build`:

    python3 tests/sdk/test_openai_sdk.py

The binary is $SLUICE_BIN (default target/debug/sluice). Exits non-zero
on the first failure; the demo process is always killed at the end.
"""

import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time

import openai
from openai import OpenAI

EXPECTED_TEXT = "Hello from the sluice mock model."
CHAT_MODEL = "llama-3.1-8b"
EMBED_MODEL = "embed-small"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(proc, port, stderr_file, timeout=10.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"sluice demo exited with {proc.returncode} before it was ready:\n{read(stderr_file)}"
            )
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            resp = conn.getresponse()
            resp.read()
            conn.close()
            if resp.status == 200:
                return
            last = f"status {resp.status}"
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"sluice demo not healthy within {timeout} s ({last}):\n{read(stderr_file)}")


def read(f):
    f.flush()
    f.seek(0)
    return f.read().decode("utf-8", "replace")


def check(cond, message):
    if not cond:
        raise AssertionError(message)


def run_checks(client):
    # Chat completion.
    chat = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Hello"}]
    )
    check(chat.object == "chat.completion", f"chat object: {chat.object!r}")
    check(
        chat.choices[0].message.content == EXPECTED_TEXT,
        f"chat content: {chat.choices[0].message.content!r}",
    )
    check(chat.choices[0].finish_reason == "stop", f"finish_reason {chat.choices[0].finish_reason!r}")
    check(chat.usage is not None and chat.usage.total_tokens > 0, f"usage: {chat.usage!r}")
    print("ok: chat completion")

    # The raw response carries sluice's headers.
    raw = client.chat.completions.with_raw_response.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Hello"}]
    )
    check(raw.headers.get("x-sluice-upstream") == "mock-gpu", f"headers: {dict(raw.headers)!r}")
    check(bool(raw.headers.get("x-request-id")), "no x-request-id")
    print("ok: sluice headers")

    # Streamed chat completion.
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
    )
    deltas = []
    chunks = 0
    for chunk in stream:
        chunks += 1
        if chunk.choices and chunk.choices[0].delta.content:
            deltas.append(chunk.choices[0].delta.content)
    text = "".join(deltas)
    check(chunks >= 2, f"only {chunks} stream chunks")
    check(text == EXPECTED_TEXT, f"streamed text: {text!r}")
    print(f"ok: streamed chat completion ({chunks} chunks)")

    # Streamed with usage.
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [c.usage for c in stream if c.usage is not None]
    check(len(usage) == 1 and usage[0].completion_tokens > 0, f"stream usage: {usage!r}")
    print("ok: streamed usage")

    # Completion.
    completion = client.completions.create(model=CHAT_MODEL, prompt="Hello")
    check(completion.object == "text_completion", f"completion object: {completion.object!r}")
    check(completion.choices[0].text == EXPECTED_TEXT, f"completion text: {completion.choices[0].text!r}")
    print("ok: completion")

    # Embeddings.
    emb = client.embeddings.create(model=EMBED_MODEL, input=["alpha", "beta"])
    check(len(emb.data) == 2, f"embeddings: {len(emb.data)} items")
    check(all(len(d.embedding) > 0 for d in emb.data), "empty embedding vector")
    check([d.index for d in emb.data] == [0, 1], f"indexes {[d.index for d in emb.data]}")
    print("ok: embeddings")

    # Models.
    ids = sorted(m.id for m in client.models.list())
    check(ids == sorted([CHAT_MODEL, EMBED_MODEL]), f"models: {ids!r}")
    print("ok: models.list")

    # Unknown model -> NotFoundError.
    try:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "Hello"}]
        )
    except openai.NotFoundError as e:
        check(e.status_code == 404, f"status {e.status_code}")
        body = e.body if isinstance(e.body, dict) else {}
        check(body.get("code") == "model_not_found", f"error body: {e.body!r}")
        print("ok: unknown model raises NotFoundError")
    else:
        raise AssertionError("an unknown model did not raise openai.NotFoundError")


def main():
    binary = os.environ.get("SLUICE_BIN", "target/debug/sluice")
    if not os.path.exists(binary):
        print(f"FAIL: {binary} not found (run `cargo build`, or set SLUICE_BIN)", file=sys.stderr)
        return 2
    port, metrics_port = free_port(), free_port()
    stderr_file = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [
            binary,
            "demo",
            "--listen",
            f"127.0.0.1:{port}",
            "--metrics-listen",
            f"127.0.0.1:{metrics_port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr_file,
    )
    try:
        wait_for_health(proc, port, stderr_file)
        client = OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1",
            api_key="sk-sluice-demo",
            max_retries=0,
            timeout=10.0,
        )
        run_checks(client)
    except Exception as e:  # noqa: BLE001 - report any failure and exit non-zero
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        print(f"---- sluice demo stderr ----\n{read(stderr_file)}", file=sys.stderr)
        return 1
    finally:
        proc.kill()
        proc.wait()
    print("all OpenAI SDK checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
