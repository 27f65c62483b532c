"""vufront-backend processes and `vufront` runs for the Python integration
tests of the snapshot, restore and job commands (test_job.py,
test_snapshot_cli.py)."""
import json
import os
import signal
import subprocess
import threading


class Backend:
    """vufront-backend on `sock`, started with `args`; ready once it logs that
    it listens (its stderr is drained by a thread and kept). Always stopped by
    pid: use it as a context manager, or call stop() in a finally."""

    def __init__(self, binary, sock, *args):
        self.sock = sock
        self.log = []
        self.proc = subprocess.Popen([binary, '--socket', sock, '--verbose', *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.listening = threading.Event()
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()
        if not self.listening.wait(10):
            self.stop()
            raise AssertionError('back-end on %s did not start listening' % sock)

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)
            if 'listening on' in line:
                self.listening.set()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait(10)
        self.reader.join(2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Backends:
    """Several back-ends, all stopped on exit, also when a start fails."""

    def __init__(self, binary, tmp):
        self.binary = binary
        self.tmp = tmp
        self.started = []

    def start(self, name, *args):
        b = Backend(self.binary, os.path.join(self.tmp, name + '.sock'), *args)
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
