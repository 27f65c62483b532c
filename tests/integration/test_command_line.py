#!/usr/bin/env python3
"""The command-line conventions of the three programs (vufront,
vufront-backend, vufront-example-vmm; base/command_line.hpp): help and
version everywhere, unknown subcommands and options named, every usage error
exits 2, values refused before anything starts."""
import argparse
import os
import subprocess
import sys

from runner import run_tests

ARGS = None
SUBCOMMANDS = ('probe', 'check', 'demo', 'snapshot', 'restore', 'job', 'attach')


def run(program, *args):
    return subprocess.run([program, *args], capture_output=True, text=True, timeout=60)


def programs():
    return ((ARGS.vufront, 'vufront'), (ARGS.backend, 'vufront-backend'),
            (ARGS.vmm, 'vufront-example-vmm'))


def test_help_and_version_everywhere(tmp):
    for path, name in programs():
        for flag in ('--help', '-h'):
            r = run(path, flag)
            assert r.returncode == 0 and 'Usage' in r.stdout, (name, flag, r.stdout, r.stderr)
        for flag in ('--version', '-V'):
            r = run(path, flag)
            assert r.returncode == 0 and r.stdout.startswith(name + ' '), (name, flag, r.stdout)
    for sub in SUBCOMMANDS:
        for args in ((sub, '--help'), ('help', sub)):
            r = run(ARGS.vufront, *args)
            assert r.returncode == 0 and 'Usage' in r.stdout and sub in r.stdout, (args, r.stdout)
        r = run(ARGS.vufront, sub, '--version')
        assert r.returncode == 0 and r.stdout.startswith('vufront '), (sub, r.stdout, r.stderr)
    r = run(ARGS.vufront, 'help')
    assert r.returncode == 0 and all(sub in r.stdout for sub in SUBCOMMANDS), r.stdout


def test_unknown_names_are_named_and_exit_2(tmp):
    cases = [
        ((ARGS.vufront, 'bogus'), "unknown command 'bogus'"),
        ((ARGS.vufront, 'help', 'bogus'), "unknown command 'bogus'"),
        ((ARGS.vufront, '--bogus'), "unknown option '--bogus'"),
        ((ARGS.vufront, 'probe', '--bogus'), "vufront probe: unknown option '--bogus'"),
        ((ARGS.vufront, 'check', 's', '--queues=2', '--colour=red'), "unknown option '--colour'"),
        ((ARGS.vufront, 'attach', '-x'), "unknown option '-x'"),
        ((ARGS.backend, '--socket', 's', '--bogus'), "unknown option '--bogus'"),
        ((ARGS.vmm, '--control', 'c', '--bogus'), "unknown option '--bogus'"),
    ]
    for argv, said in cases:
        r = run(*argv)
        assert r.returncode == 2, (argv, r.returncode, r.stderr)
        assert said in r.stderr and '--help' in r.stderr, (argv, r.stderr)
    r = run(ARGS.vufront, 'bogus')
    assert 'probe, check' in r.stderr, r.stderr  # the commands there are
    # what CLI11 itself reports still exits 2
    r = run(ARGS.vufront)
    assert r.returncode == 2 and 'subcommand is required' in r.stderr, r.stderr
    r = run(ARGS.vufront, 'probe')
    assert r.returncode == 2 and 'SOCKET is required' in r.stderr, r.stderr
    r = run(ARGS.vmm)
    assert r.returncode == 2 and '--control is required' in r.stderr, r.stderr


def test_socket_paths_are_checked_before_anything_starts(tmp):
    long_path = os.path.join(tmp, 'x' * 120)
    for argv in ((ARGS.vufront, 'probe', ''), (ARGS.vufront, 'probe', long_path),
                 (ARGS.vufront, 'check', long_path), (ARGS.vufront, 'snapshot', long_path,
                                                      '--out', os.path.join(tmp, 'o')),
                 (ARGS.vufront, 'attach', '--backend', long_path, '--control', 'c'),
                 (ARGS.vufront, 'attach', '--backend', 's', '--control', long_path),
                 (ARGS.backend, '--socket', long_path), (ARGS.backend, '--socket', ''),
                 (ARGS.vmm, '--control', long_path)):
        r = run(*argv)
        assert r.returncode == 2, (argv[1:3], r.returncode, r.stderr)
        assert 'socket path' in r.stderr, (argv[1:3], r.stderr)


def test_check_queue_size_is_checked_before_anything_starts(tmp):
    sock = os.path.join(tmp, 'nothing.sock')  # never connected to: the value is refused first
    r = run(ARGS.vufront, 'check', sock, '--queue-size', '100')
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert '--queue-size 100' in r.stderr and 'power of two' in r.stderr, r.stderr
    assert 'negotiate' not in r.stdout, r.stdout


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--vufront', required=True)
    ap.add_argument('--backend', required=True)
    ap.add_argument('--vmm', required=True)
    ap.add_argument('-k', help='run only tests whose name contains this')
    ARGS = ap.parse_args()
    return run_tests(globals(), ARGS.k, prefix='vufront-cli-')


if __name__ == '__main__':
    sys.exit(main())
