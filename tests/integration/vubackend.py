"""vufront-backend processes, `vufront attach`, `vufront` runs and the
shared/peers back-ends for the Python integration tests (test_attach.py,
test_backend.py, test_check.py, test_job.py, test_probe.py,
test_snapshot_cli.py)."""
import array
import json
import os
import select
import signal
import socket
import sys
import subprocess
import threading
import time


class StderrLog(list):
    """A process's stderr lines, read by a thread as they come. wait_for()
    waits on them: a line the process wrote may not have been read yet."""

    def __init__(self, stream):
        super().__init__()
        self.ended = False  # the process closed its stderr (it exited)
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._reader.start()

    def _drain(self, stream):
        for line in stream:
            with self._changed:
                self.append(line)
                self._changed.notify_all()
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def has(self, text):
        return any(text in line for line in self)

    def wait_for(self, text, timeout=10):
        """True once a line contains `text`; False when the process ended
        first or `timeout` seconds passed."""
        with self._changed:
            self._changed.wait_for(lambda: self.has(text) or self.ended, timeout)
            return self.has(text)

    def wait_count(self, text, n, timeout=10):
        """True once `n` lines contain `text`; False when the process ended
        first or `timeout` seconds passed."""
        with self._changed:
            self._changed.wait_for(
                lambda: sum(text in line for line in self) >= n or self.ended, timeout)
            return sum(text in line for line in self) >= n

    def wait_lines(self, n, timeout=10):
        """True once `n` lines have come; False when the process ended first
        or `timeout` seconds passed."""
        with self._changed:
            self._changed.wait_for(lambda: len(self) >= n or self.ended, timeout)
            return len(self) >= n

    def expect(self, text, timeout=10):
        """wait_for(), failing the test with the last lines if it comes to nothing."""
        if not self.wait_for(text, timeout):
            raise AssertionError('no log line with %r in:\n%s' % (text, ''.join(self[-40:])))
        return True

    def join(self, timeout):
        self._reader.join(timeout)


class Process:
    """A child process (self.proc) whose stderr lines are kept in self.log
    (a StderrLog). Stopped by pid: SIGINT, then SIGKILL after `stop_grace`
    seconds; use it as a context manager, or call stop() in a finally."""

    stop_grace = 3

    def wait_log(self, text, timeout=10):
        """Waits until a log line contains `text`."""
        return self.log.expect(text, timeout)

    def log_text(self):
        """Everything it logged so far, as one string."""
        return ''.join(self.log)

    def wait_exit(self, timeout):
        """Its exit status, or None if it still runs after `timeout` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        """Stops it (if it still runs) and returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait(10)
        self.log.join(2)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Peer:
    """A back-end started by a shared/peers start script (`script` in
    `peers`), on `sock`. The script detaches it, so it is not our child: once
    it exits, init reaps it and its pid may go to any new process. It is
    therefore signalled only through a pidfd taken while it runs, never by
    pid. Use it as a context manager, or call stop() in a finally."""

    def __init__(self, peers, script, sock, *args, env=None):
        self.peers = peers
        self.sock = sock
        out = subprocess.run([os.path.join(peers, script), sock, *args],
                             env=dict(os.environ, **(env or {})),
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise AssertionError('%s failed (exit %d): %s' % (script, out.returncode,
                                                               (out.stdout + out.stderr)[-2000:]))
        self.pid = int(out.stdout.split()[-1])   # for messages and /proc only
        self._pidfd = os.pidfd_open(self.pid)     # it is up (its socket is): this is it

    def signal(self, sig):
        """Sends `sig`; False once it has exited or was stopped."""
        if self.wait_exit(0):   # exited (a zombie not reaped yet would take it)
            return False
        try:
            signal.pidfd_send_signal(self._pidfd, sig)
            return True
        except ProcessLookupError:
            return False

    def wait_exit(self, timeout):
        """True once it has exited (waits up to `timeout` seconds)."""
        return self._pidfd is None or bool(select.select([self._pidfd], [], [], timeout)[0])

    def stop(self):
        """SIGINT, then SIGKILL after 3 s, whatever state the test left it in;
        then stop-peer.sh removes its socket and files (its pid file first,
        so the script signals nobody)."""
        if self._pidfd is not None:
            try:
                for sig, wait_s in ((signal.SIGINT, 3.0), (signal.SIGKILL, 2.0)):
                    if not self.signal(sig) or self.wait_exit(wait_s):
                        break
            finally:
                os.close(self._pidfd)
                self._pidfd = None
        try:
            os.unlink(self.sock + '.pid')
        except FileNotFoundError:
            pass
        subprocess.run([os.path.join(self.peers, 'stop-peer.sh'), self.sock],
                       capture_output=True, timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Backend(Process):
    """vufront-backend on `sock`, started with `args`; ready once it logs that
    it listens (its stderr is drained by a thread and kept). Always stopped by
    pid: use it as a context manager, or call stop() in a finally."""

    def __init__(self, binary, sock, *args, ready='listening on'):
        self.sock = sock
        # `ready`: the log line that says it is up ('connecting to' with --connect)
        self.proc = subprocess.Popen([binary, '--socket', sock, '--verbose', *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = StderrLog(self.proc.stderr)
        if not self.log.wait_for(ready, 10):
            self.stop()
            raise AssertionError('back-end on %s did not start listening:\n%s' % (sock, ''.join(self.log)))


class Backends:
    """Several back-ends, all stopped on exit, also when a start fails."""

    def __init__(self, binary, tmp):
        self.binary = binary
        self.tmp = tmp
        self.started = []

    def start(self, name, *args, ready='listening on'):
        b = Backend(self.binary, os.path.join(self.tmp, name + '.sock'), *args, ready=ready)
        self.started.append(b)
        return b

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for b in self.started:
            b.stop()


def run(binary, *args, timeout=120):
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout)


def write_job(tmp, job, name='job.json'):
    path = os.path.join(tmp, name)
    with open(path, 'w') as f:
        json.dump(job, f, indent=2)
    return path


def job_events(stdout):
    """The JSON lines of `vufront job --json-progress`: (events, summary)."""
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert lines and lines[-1].get('event') == 'summary', stdout
    return lines[:-1], lines[-1]


def index_of(events, device, name, event, step=None):
    """Position of the first matching event."""
    for i, e in enumerate(events):
        if (e['device'] == device and e['name'] == name and e['event'] == event
                and (step is None or e['step'] == step)):
            return i
    raise AssertionError('no %s %s %s in %s' % (device, name, event, events))


def leftovers(directory):
    """Temporary snapshot files left in `directory`."""
    return [f for f in os.listdir(directory) if '.tmp.' in f]


class Attach(Process):
    """`vufront attach` with `args` (its --control is `control`); ready once it
    logs that it serves. Always stopped by pid (SIGINT, then SIGKILL): use it
    as a context manager. `log` keeps its stderr lines."""

    def __init__(self, vufront, control, *args, timeout=20):
        self.control = control
        self.proc = subprocess.Popen([vufront, 'attach', '--control', control, *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = StderrLog(self.proc.stderr)
        if not self.log.wait_for(' serving ', timeout):
            self.stop()
            raise AssertionError('vufront attach did not start serving:\n' + ''.join(self.log))

    stop_grace = 10

    @property
    def pid(self):
        return self.proc.pid

    def __exit__(self, exc_type, exc, tb):
        code = self.stop()
        if exc_type is not None:  # the test failed: what vufront said, and how it ended
            sys.stderr.write('vufront attach (exit %s) logged:\n%s' % (code, ''.join(self.log[-200:])))


class Control:
    """A raw VMM connection to `vufront attach` (SOCK_SEQPACKET, JSON per
    packet, fds with SCM_RIGHTS): call() sends a command and returns its
    reply, keeping the events that came meanwhile in `events`."""

    def __init__(self, path, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.events = []
        self.next_id = 1
        self.greeting = self.recv()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data, fds=()):
        if fds:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', fds))])
        else:
            self.sock.send(data)

    def recv(self):
        msg, anc, _, _ = self.sock.recvmsg(1 << 17, socket.CMSG_SPACE(16 * 4))
        if not msg:
            raise EOFError('vufront closed the connection')
        fds = []
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array('i')
                a.frombytes(data[:len(data) - len(data) % 4])
                fds.extend(a)
        m = json.loads(msg)
        if fds:
            m['_fds'] = fds
        return m

    def reply(self, id_):
        """The reply with `id_`; events meanwhile go to self.events."""
        while True:
            m = self.recv()
            if 'event' in m:
                self.events.append(m)
                continue
            if m.get('id') == id_:
                return m

    def call(self, cmd, args=None, fds=(), device=None, **extra):
        id_ = self.next_id
        self.next_id += 1
        m = {'id': id_, 'cmd': cmd}
        if device:
            m['device'] = device
        if args is not None:
            m['args'] = args
        m.update(extra)
        self.send_raw(json.dumps(m).encode(), fds)
        return self.reply(id_)

    def ok(self, cmd, args=None, fds=(), device=None):
        r = self.call(cmd, args, fds, device)
        assert r['ok'] is True, (cmd, r)
        return r['result']

    def error(self, cmd, args=None, fds=(), device=None, code=None):
        r = self.call(cmd, args, fds, device)
        assert r['ok'] is False, (cmd, r)
        if code:
            assert r['error']['code'] == code, (cmd, code, r)
        return r['error']

    def wait_event(self, name, timeout=10, **match):
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get('event') == name and all(e.get(k) == v for k, v in match.items()):
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError('no %s event %r; got %s' % (name, match, self.events))
            self.sock.settimeout(left)
            try:
                m = self.recv()
            except socket.timeout:
                continue
            finally:
                self.sock.settimeout(10)
            if 'event' in m:
                self.events.append(m)


def open_fds(pid):
    """The number of fds process `pid` has open."""
    return len(os.listdir('/proc/%d/fd' % pid))
