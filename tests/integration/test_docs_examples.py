#!/usr/bin/env python3
"""Every transcript in README.md and docs/*.md runs here, and its output must
have the shape the document shows, so the examples cannot drift from the
program.

A transcript is a fenced block with lines that start with "$ ". Each such
line is run (paths under /tmp/ moved into this test's directory; `vufront`,
`vufront-backend`, `vufront-example-vmm` are the built programs, `start-*.sh`
the peer scripts of shared/peers); the lines after it, up to the next "$ ",
are what it prints (stdout and stderr; for a command ending in "&", which
runs in the background until the block ends, its first lines of stderr).
"..." on a line of its own stands for any number of lines, and at the end of
a line for the rest of it. The shape: numbers, hex values, checksums, times
of day and durations ("161 ms", "1.20 s") may differ; every word, unit and
column order must be as shown. A block without "$ " lines is not run.

    test_docs_examples.py --vufront build/bin/vufront --backend build/bin/vufront-backend
        --vmm build/bin/vufront-example-vmm --peers ../shared/peers --source .
"""
import argparse
import glob
import os
import re
import shlex
import signal
import subprocess
import sys

from runner import run_tests
from vubackend import Peer, StderrLog

ARGS = None


def transcripts(path):
    """(line number, [lines]) of every fenced block with a "$ " line."""
    out, block, start = [], None, 0
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip('\n')
            if line.strip().startswith('```'):
                if block is None:
                    block, start = [], n
                else:
                    if any(b.startswith('$ ') for b in block):
                        out.append((start, block))
                    block = None
                continue
            if block is not None:
                block.append(line)
    return out


def shape(line):
    """The line with what may differ replaced by placeholders."""
    s = line.strip()
    s = re.sub(r'\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?', 'TIME', s)
    s = re.sub(r'\b\d{2}:\d{2}:\d{2}(\.\d+)?\b', 'TIME', s)
    s = re.sub(r'\b\d+(\.\d+)? (ms|s)\b', 'DURATION', s)
    s = re.sub(r'\b0x[0-9a-f]+\b', 'HEX', s)
    s = re.sub(r'\b[0-9a-f]{16,}\b', 'HEX', s)
    s = re.sub(r'\b\d+(\.\d+)? [KMGT]iB/s\b', 'RATE', s)  # the unit follows the rate
    s = re.sub(r'\d+(\.\d+)?', 'N', s)
    return re.sub(r'\s+', ' ', s)


def line_matches(doc, real):
    d, r = shape(doc), shape(real)
    if d.endswith('...'):
        return r.startswith(d[:-3].rstrip())
    return d == r


def matches(doc_lines, real_lines):
    """Whether real_lines have the shape of doc_lines ("..." lines: any number)."""
    if not doc_lines:
        return not real_lines
    if doc_lines[0].strip() == '...':
        return any(matches(doc_lines[1:], real_lines[i:]) for i in range(len(real_lines) + 1))
    return bool(real_lines) and line_matches(doc_lines[0], real_lines[0]) and \
        matches(doc_lines[1:], real_lines[1:])


class Transcript:
    """Runs one transcript's commands; stops what it started, by pid."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.background = []   # (Popen, StderrLog)
        self.peers = []

    def argv(self, command):
        command = re.sub(r'\s+#.*$', '', command).replace('/tmp/', self.tmp + '/')
        args = shlex.split(command)
        programs = {'vufront': ARGS.vufront, 'vufront-backend': ARGS.backend,
                    'vufront-example-vmm': ARGS.vmm}
        args[0] = programs.get(args[0], args[0])
        return args

    def run(self, command, expected, where):
        background = command.rstrip().endswith('&')
        args = self.argv(command.rstrip().rstrip('&'))
        if os.path.basename(args[0]).startswith('start-') and args[0].endswith('.sh'):
            self.peers.append(Peer(ARGS.peers, args[0], args[1], *args[2:]))
            return
        if background:
            self.start(args, expected, where)
            return
        r = subprocess.run(args, capture_output=True, text=True, timeout=120)
        real = (r.stdout + r.stderr).replace(self.tmp + '/', '/tmp/').splitlines()
        assert matches(expected, real), '%s: `%s` printed\n%s\nthe document shows\n%s' % (
            where, command, '\n'.join(real), '\n'.join(expected))

    def start(self, args, expected, where):
        if os.path.basename(args[0]) == os.path.basename(ARGS.backend):
            args = args + ['--verbose']  # it says when it listens
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        log = StderrLog(p.stderr)
        self.background.append((p, log))
        ready = {'vufront-backend': 'listening on', 'vufront': ' serving '}
        word = ready.get(os.path.basename(args[0]))
        if word:
            assert log.wait_for(word, 20), '%s: `%s` did not start:\n%s' % (where, ' '.join(args),
                                                                          ''.join(log))
        wanted = [e for e in expected if e.strip() != '...']
        log.wait_lines(len(wanted), 10)
        real = [l.rstrip('\n').replace(self.tmp + '/', '/tmp/') for l in log]
        if word and os.path.basename(args[0]) == 'vufront-backend':
            return  # its --verbose log is ours, not the document's
        assert matches(expected, real), '%s: `%s` logged\n%s\nthe document shows\n%s' % (
            where, ' '.join(args), '\n'.join(real), '\n'.join(expected))

    def stop(self):
        for p, _ in reversed(self.background):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        for peer in self.peers:
            peer.stop()


def run_block(tmp, where, block):
    t = Transcript(tmp)
    try:
        i = 0
        while i < len(block):
            if not block[i].startswith('$ '):
                i += 1
                continue
            j = i + 1
            while j < len(block) and not block[j].startswith('$ '):
                j += 1
            t.run(block[i][2:], block[i + 1:j], '%s (line %d of the block)' % (where, i + 1))
            i = j
    finally:
        t.stop()


def documents():
    return [os.path.join(ARGS.source, 'README.md')] + sorted(
        glob.glob(os.path.join(ARGS.source, 'docs', '*.md')))


def test_every_transcript_runs_with_the_documented_shape(tmp):
    ran = 0
    for doc in documents():
        for start, block in transcripts(doc):
            sub = os.path.join(tmp, '%s-%d' % (os.path.basename(doc), start))
            os.mkdir(sub)
            run_block(sub, '%s:%d' % (os.path.relpath(doc, ARGS.source), start), block)
            ran += 1
    assert ran >= 4, 'only %d transcripts found' % ran


def test_the_shape_rules(tmp):
    assert matches(['a', '...', 'z 1.5 s'], ['a', 'b', 'c', 'z 161 ms'])
    assert matches(['x 0x1f ...'], ['x 0xab more words'])
    assert not matches(['64.0 MiB of state'], ['64.0 KiB of state'])
    assert not matches(['ok step'], ['ok step', 'extra line'])
    assert shape('vufront attach: 10:02:11 serving') == shape('vufront attach: 2026-12-06 11:35:39.123 serving')


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--vufront', required=True)
    ap.add_argument('--backend', required=True)
    ap.add_argument('--vmm', required=True)
    ap.add_argument('--peers', required=True)
    ap.add_argument('--source', required=True)
    ap.add_argument('-k', help='run only tests whose name contains this')
    ARGS = ap.parse_args()
    return run_tests(globals(), ARGS.k, prefix='vufront-docs-')


if __name__ == '__main__':
    sys.exit(main())
