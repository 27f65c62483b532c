#!/usr/bin/env python3
"""Writes the bash completion of one program from what its --help says
(dist/cli_help.py): its subcommands (with `help SUBCOMMAND`), each command's
options, the values of an option with a fixed set ({blk,net,fs}), file names
for an option or argument naming a file or socket, directories (DIR), groups
(GROUP).

  completion.py PROGRAM NAME OUT
"""
import sys

import cli_help


def quote(words):
    return "'" + ' '.join(words) + "'"


def value_cases(func, key, command):
    """The `case "$cmd $prev"` arms for the options of `command` that take a value."""
    arms = []
    for o in command.options:
        if o.positional() or o.kind == 'flag':
            continue
        pattern = '|'.join('"%s %s"' % (key, n) for n in o.names)
        if o.kind == 'choice':
            action = 'mapfile -t COMPREPLY < <(compgen -W %s -- "$cur")' % quote(o.choices)
        elif o.kind == 'path':
            action = '%s_files -f' % func
        elif o.kind == 'dir':
            action = '%s_files -d' % func
        elif o.kind == 'group':
            action = 'mapfile -t COMPREPLY < <(compgen -g -- "$cur")'
        else:
            action = 'COMPREPLY=()'  # a number or a free value: nothing to offer
        arms.append('    %s) %s; return ;;' % (pattern, action))
    return arms


def option_cases(key, command):
    names = [n for o in command.options if not o.positional() for n in o.names]
    return ['    "%s") mapfile -t COMPREPLY < <(compgen -W %s -- "$cur"); return ;;' % (key, quote(names))]


def positional_case(func, key, command):
    if any(o.positional() and o.kind == 'path' for o in command.options):
        return ['    "%s") %s_files -f; return ;;' % (key, func)]
    return []


def render(name, top, subs):
    func = '_' + name.replace('-', '_')
    keys = [('', top)] + [(s.name, s) for s in subs]
    sub_names = [s.name for s in subs]
    lines = [
        '# bash completion for %s. Generated at build time from `%s --help`' % (name, name)
        + (' and each' if subs else ''),
        '# ' + ("subcommand's --help " if subs else '') + 'by dist/completion.py: do not edit.',
        '# shellcheck shell=bash',
        '',
        '%s_files() {  # -f: files, -d: directories' % func,
        '  compopt -o filenames 2>/dev/null',
        '  mapfile -t COMPREPLY < <(compgen "$1" -- "$cur")',
        '}',
        '',
        '%s() {' % func,
        '  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd=""'
        + (' i' if subs else ''),
    ]
    if subs:
        lines += [
            '  for ((i = 1; i < COMP_CWORD; i++)); do',
            '    case ${COMP_WORDS[i]} in',
            '      %s) cmd=${COMP_WORDS[i]}; break ;;' % '|'.join(sub_names + ['help']),
            '    esac',
            '  done',
            '  if [ "$cmd" = help ]; then',
            '    [ "$prev" = help ] && mapfile -t COMPREPLY < <(compgen -W %s -- "$cur")' % quote(sub_names),
            '    return',
            '  fi',
        ]
    lines.append('  case "$cmd $prev" in')
    for key, command in keys:
        lines += value_cases(func, key, command)
    lines += ['  esac', '  if [[ $cur == -* ]]; then', '    case "$cmd" in']
    for key, command in keys:
        lines += option_cases(key, command)
    lines += ['    esac', '  fi']
    if subs:
        lines += ['  if [ -z "$cmd" ]; then',
                  '    mapfile -t COMPREPLY < <(compgen -W %s -- "$cur")' % quote(sub_names + ['help']),
                  '    return', '  fi']
    positional = [arm for key, command in keys for arm in positional_case(func, key, command)]
    if positional:
        lines += ['  case "$cmd" in'] + positional + ['  esac']
    lines += ['}', '', 'complete -F %s %s' % (func, name), '']
    return '\n'.join(lines)


if __name__ == '__main__':
    program, name, out = sys.argv[1:4]
    top = cli_help.read(program)
    subs = [cli_help.read(program, s) for s, _ in top.subcommands]
    with open(out, 'w') as f:
        f.write(render(name, top, subs))
