#!/usr/bin/env python3
"""docs/json-output.md against the real JSON of every command: the tables of
the doc are read here, each command is run (probe, check, demo, snapshot,
restore, job; successes and failures) against vufront-backend, and every
object must have exactly the documented keys with the documented types. A
section of the doc that no run here produces fails the test too, so the doc
and the program cannot drift apart.

    test_json_output.py --vufront build/bin/vufront --backend build/bin/vufront-backend --doc docs/json-output.md
"""
import argparse
import json
import os
import re
import sys

from runner import run_tests
from vubackend import Backends, job_events, run, write_job

ARGS = None
TYPES = {'string', 'number', 'boolean', 'features', 'object', 'array', 'null'}


def doc_tables(path):
    """{section: {key: set of types}} of every '## section' with a key table."""
    tables, section = {}, None
    with open(path) as f:
        for line in f:
            if line.startswith('## '):
                section = line[3:].strip()
                continue
            m = re.match(r'\| `([^`]+)` \| ([a-z ]+) \|', line)
            if section and m:
                types = set(m.group(2).split(' or '))
                assert types <= TYPES, (section, m.group(1), types)
                tables.setdefault(section, {})[m.group(1)] = types
    return tables


def type_ok(value, types):
    if value is None:
        return 'null' in types
    if isinstance(value, bool):
        return 'boolean' in types
    if isinstance(value, (int, float)):
        return 'number' in types
    if isinstance(value, str):
        return 'string' in types
    if isinstance(value, list):
        return 'array' in types
    if isinstance(value, dict):
        if 'features' in types:
            return (set(value) == {'bits', 'names'} and re.fullmatch('0x[0-9a-f]{16}', value['bits'])
                    and all(isinstance(n, str) for n in value['names'])
                    and len(value['names']) == bin(int(value['bits'], 16)).count('1'))
        return 'object' in types
    return False


def check_object(obj, table, where, prefix=''):
    """obj has exactly the keys `table` lists at `prefix`, each of its types;
    arrays with documented element keys are checked element by element."""
    keys = {k[len(prefix):]: t for k, t in table.items()
            if k.startswith(prefix) and '[]' not in k[len(prefix):]}
    assert set(obj) == set(keys), '%s: keys %s, documented %s' % (where, sorted(obj), sorted(keys))
    for k, types in keys.items():
        assert type_ok(obj[k], types), '%s: %s%s = %r is not %s' % (where, prefix, k, obj[k], types)
        if isinstance(obj[k], list) and any(x.startswith(prefix + k + '[].') for x in table):
            for i, item in enumerate(obj[k]):
                check_object(item, table, '%s: %s%s[%d]' % (where, prefix, k, i), prefix + k + '[].')


class Seen:
    """Checks outputs against the doc and remembers which sections were covered."""

    def __init__(self):
        self.tables = doc_tables(ARGS.doc)
        self.covered = set()

    def check(self, section, obj, where):
        assert section in self.tables, 'docs/json-output.md has no section "%s"' % section
        check_object(obj, self.tables[section], where)
        self.covered.add(section)


def vufront_json(*args, rc=0):
    r = run(ARGS.vufront, *args, timeout=120)
    assert r.returncode == rc, (args, r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)


def test_every_documented_object_against_real_output(tmp):
    seen = Seen()
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M', '--shmem-size', '1M')
        b = bs.start('b', '--size', '4M', '--shmem-size', '1M')
        closing = bs.start('closing', '--size', '4M', '--close-at', 'SET_DEVICE_STATE_FD')
        missing = os.path.join(tmp, 'missing.sock')
        # probe: shared memory offered, so the regions' keys are checked too
        p = vufront_json('probe', a.sock, '--json')
        assert p['shmem_regions'], p
        seen.check('probe', p, 'probe')
        seen.check('probe (failure)', vufront_json('probe', missing, '--json', rc=1), 'probe failure')
        seen.check('check', vufront_json('check', a.sock, '--json'), 'check')
        seen.check('check', vufront_json('check', missing, '--json', rc=1), 'check failure')
        seen.check('demo', vufront_json('demo', '--json'), 'demo')
        snap = os.path.join(tmp, 's.vfsnap')
        s = vufront_json('snapshot', a.sock, '--out', snap, '--json')
        seen.check('snapshot', s, 'snapshot')
        failed = vufront_json('snapshot', closing.sock, '--out', os.path.join(tmp, 'x.vfsnap'), '--json',
                              rc=1)
        seen.check('snapshot (failure)', failed, 'snapshot failure')
        seen.check('restore', vufront_json('restore', b.sock, '--in', snap, '--json'), 'restore')
        garbage = os.path.join(tmp, 'garbage.vfsnap')
        with open(garbage, 'w') as f:
            f.write('not a snapshot\n')
        seen.check('restore (failure)', vufront_json('restore', b.sock, '--in', garbage, '--json', rc=1),
                   'restore failure (open)')
        seen.check('restore (failure)', vufront_json('restore', closing.sock, '--in', snap, '--json', rc=1),
                   'restore failure (transfer)')
        m = bs.start('m', '--size', '16M')
        n = bs.start('n', '--size', '16M')
        job = write_job(tmp, {'devices': [
            {'name': 'disk0', 'socket': a.sock, 'steps': ['activate', 'check', 'sleep',
                                                          {'snapshot': os.path.join(tmp, 'j.vfsnap')}]},
            {'name': 'moved', 'socket': m.sock,
             'steps': ['activate', {'migrate': {'socket': n.sock, 'state_dir': tmp}}]},
            {'name': 'ghost', 'socket': missing, 'steps': ['activate']}]})
        r = run(ARGS.vufront, 'job', job, '--json-progress')
        assert r.returncode == 1, r.stdout + r.stderr
        events, summary = job_events(r.stdout)
        for i, e in enumerate(events):
            seen.check('job ' + e['event'], e, 'job event %d' % i)
            if e['event'] == 'done' and e['name'] == 'migrate':
                seen.check('job done: migrate', e['migrate'], 'job event %d: migrate' % i)
        seen.check('job summary', summary, 'job summary')
    missed = set(seen.tables) - seen.covered
    assert not missed, 'documented but not produced here: %s' % sorted(missed)


def test_the_doc_parses_into_tables(tmp):
    tables = doc_tables(ARGS.doc)
    assert {'probe', 'check', 'snapshot', 'restore', 'job summary'} <= set(tables), sorted(tables)
    assert tables['probe']['features'] == {'features'}
    assert tables['probe']['queue_num'] == {'number', 'null'}


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--vufront', required=True)
    ap.add_argument('--backend', required=True)
    ap.add_argument('--doc', required=True)
    ap.add_argument('-k', help='run only tests whose name contains this')
    ARGS = ap.parse_args()
    return run_tests(globals(), ARGS.k, prefix='vufront-json-')


if __name__ == '__main__':
    sys.exit(main())
