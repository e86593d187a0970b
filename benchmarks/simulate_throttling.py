"""Simulate batchsync's RateLimiter against a Graph-like token bucket, in virtual time.

A discrete-event model: workers take slots from the real RateLimiter (on a virtual clock), the
server charges each request to a bucket of C tokens refilled at R per second as the emulator does,
answers carry x-ms-throttle-limit-percentage above 80% usage, and a 429 carries an integer
Retry-After (at least 1 s) that pauses the pool. It runs the benchmark scenarios in about a
second each, which is how the adaptation constants in batchsync/ratelimit.py were tuned; the
real figures come from benchmarks/throttling.py.

    .venv/bin/python benchmarks/simulate_throttling.py
"""

import heapq
import importlib
import math
import sys

import batchsync.ratelimit as RL


def simulate(
    targets=2000,
    R=100.0,
    C=20.0,
    client=400.0,
    latency=0.005,
    concurrency=16,
    seed=1,
    verbose=False,
):
    importlib.reload(RL)
    now = [0.0]
    lim = RL.RateLimiter(client, burst=1, adaptive=True, clock=lambda: now[0])
    level = C
    updated = 0.0
    # events: (time, seq, kind, data)
    ev = []
    seq = [0]

    def push(t, kind, data=None):
        seq[0] += 1
        heapq.heappush(ev, (t, seq[0], kind, data))

    remaining = targets
    done = 0
    requests = 0
    throttled = 0

    # workers: each loops: acquire -> send -> response -> maybe retry
    def worker_next(w, retry=False):
        nonlocal remaining
        if not retry:
            if remaining == 0:
                return
            remaining -= 1
        # acquire: compute slot time
        t = now[0]
        while True:
            if lim._paused_until > t:
                t = lim._paused_until
            now_save = now[0]
            now[0] = t
            d = lim._reserve(t)
            now[0] = now_save
            t2 = t + d
            if lim._paused_until <= t2:
                break
            t = t2
        push(t2, "send", w)

    for w in range(concurrency):
        worker_next(w)
    while ev:
        t, _, kind, w = heapq.heappop(ev)
        now[0] = t
        if kind == "send":
            requests += 1
            # server charge at arrival
            ta = t + latency / 2
            level = min(C, level + (ta - updated) * R)
            updated = ta
            ok = level >= 1
            level = max(level - 1, -C)
            usage = (C - level) / C
            hdr = usage if usage > 0.8 else None
            if ok:
                push(t + latency, "ok", (w, round(hdr, 2) if hdr else None))
            else:
                wait = max(1, math.ceil((1 - level) / R))
                push(t + latency, "429", (w, wait))
        elif kind == "ok":
            w, hdr = w
            lim.on_response(hdr)
            done += 1
            worker_next(w)
        elif kind == "429":
            w, wait = w
            throttled += 1
            lim.on_throttled()
            lim.pause(wait)
            # tenacity waits retry_after then re-acquires
            now_t = now[0]
            push(now_t + wait, "retry", w)
        elif kind == "retry":
            worker_next(w, retry=True)
        if verbose and requests % 250 == 0 and kind == "send":
            print(f"t={t:.2f} rate={lim.rate:.1f} level={level:.1f}")
    ideal = (targets - C) / R
    print(
        f"targets={targets} R={R} C={C} client={client}: elapsed={now[0]:.2f} ideal={ideal:.2f} share={targets / now[0] / R:.3f} 429s={throttled} ({throttled / requests:.2%}) paused={lim.stats.paused_seconds:.1f}"
    )
    return now[0]


if __name__ == "__main__":
    simulate(verbose="-v" in sys.argv)
    simulate(R=100, C=20, client=100)
    simulate(targets=10000, R=20, C=3000, client=400)
