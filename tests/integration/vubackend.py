"""vufront-backend processes, `vufront attach` and `vufront` runs for the
Python integration tests (test_attach.py, test_backend.py, test_check.py,
test_job.py, test_snapshot_cli.py)."""
import array
import json
import os
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
