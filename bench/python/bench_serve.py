"""serve.http_cpu / serve.http_rate: Python's pre-fork HTTP/1.0 server
under `ab -n N -c 50`, two multiprocessing workers that each accept on
the shared listening socket and answer (the fast way to serve from a
Python process pool).  CPU per request is the user + system time of the
server and its workers (wait4 of the server, which joins them)."""
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import harness

RESPONSE = (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 13\r\n\r\nHello, world!")


def worker(sock):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        conn, _ = sock.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(2048)
                if not chunk:
                    break
                data += chunk
            conn.sendall(RESPONSE)


def server(sock, ready):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    ctx = mp.get_context("fork")
    ps = [ctx.Process(target=worker, args=(sock,)) for _ in range(2)]
    for p in ps:
        p.start()
    os.write(ready, b"1")
    while not stop:
        signal.pause()
    for p in ps:
        p.terminate()
    for p in ps:
        p.join()


def one_run(n):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            server(sock, w)
        finally:
            os._exit(0)
    os.close(w)
    os.read(r, 1)
    os.close(r)
    sock.close()
    t0 = time.perf_counter()
    out = subprocess.run(["ab", "-q", "-r", "-n", str(n), "-c", "50",
                          "http://127.0.0.1:%d/" % port],
                         capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    assert int(re.search(r"Complete requests:\s+(\d+)", out).group(1)) == n
    os.kill(pid, signal.SIGTERM)
    _, _, ru = os.wait4(pid, 0)
    return ru.ru_utime + ru.ru_stime, wall


if __name__ == "__main__":
    if shutil.which("ab") is None:
        raise SystemExit(0)
    n = harness.scaled(20000)
    runs = 3 if harness.QUICK else 7
    cpu, rate = [], []
    one_run(max(1, n // 10))  # warm-up
    for _ in range(runs):
        c, w = one_run(n)
        cpu.append(c * 1e6 / n)
        rate.append(n / w)
    for bench, metric, vals in (("serve.http_cpu", "us/op", cpu),
                                ("serve.http_rate", "ops/s", rate)):
        vals.sort()
        print('{"bench":"%s","impl":"python","metric":"%s","better":"%s",'
              '"median":%.6g,"min":%.6g,"max":%.6g,"runs":%d,"n":%d}'
              % (bench, metric, harness.NAMES[metric], vals[len(vals) // 2],
                 vals[0], vals[-1], len(vals), n), flush=True)
