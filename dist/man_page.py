#!/usr/bin/env python3
"""Writes the man page of one program with help2man, from the same text as its
--help: the program's --help and --version, the sections of the program's
include file (dist/NAME.h2m: SEE ALSO and the like), and for a program with
subcommands a COMMANDS section holding each subcommand's --help
(dist/cli_help.py reads it). Runs nothing but the program: no network.

  man_page.py HELP2MAN PROGRAM NAME INCLUDE OUT
"""
import os
import subprocess
import sys
import tempfile

import cli_help


def roff(text):
    """`text` as roff: backslashes escaped, no line taken for a request."""
    text = text.replace('\\', '\\e')
    return '\\&' + text if text.startswith(('.', "'")) else text


def option_item(o):
    head = '\\fB' + roff(', '.join(o.names)) + '\\fR'
    if o.opts:
        head += ' ' + roff(o.opts)
    return ['.TP', head] + [roff(line) for line in o.description]


def command_section(program_name, sub):
    lines = ['.SS "%s %s"' % (program_name, sub.name)]
    lines += [roff(line) for line in sub.about]
    lines += ['.PP', '.B ' + roff(sub.usage)]
    for o in sub.options:
        if o.names[-1] in ('--help', '--version'):
            continue  # as for the program (OPTIONS above)
        lines += option_item(o)
    return lines


def commands_include(program, name):
    """The [COMMANDS] section of `name`'s man page, or '' without subcommands."""
    top = cli_help.read(program)
    if not top.subcommands:
        return ''
    lines = ['[COMMANDS]',
             'Each command has its own options; \\fB%s help \\fR\\fICOMMAND\\fR or '
             '\\fB%s \\fR\\fICOMMAND\\fR\\fB \\-\\-help\\fR prints them.' % (name, name)]
    for sub_name, _ in top.subcommands:
        lines += command_section(name, cli_help.read(program, sub_name))
    return '\n'.join(lines) + '\n'


def main(help2man, program, name, include, out):
    with tempfile.TemporaryDirectory() as tmp:
        argv = [help2man, '--no-info', '--no-discard-stderr', '--section', '1', '--output', out]
        extra = commands_include(program, name)
        if extra:  # first: COMMANDS comes before the include file's sections
            path = os.path.join(tmp, 'commands.h2m')
            with open(path, 'w') as f:
                f.write(extra)
            argv += ['--include', path]
        argv += ['--include', include]
        # help2man names the page after the program's file name: run it as NAME.
        link = os.path.join(tmp, name)
        os.symlink(os.path.abspath(program), link)
        subprocess.run(argv + [link], check=True, timeout=120,
                       env=dict(os.environ, LC_ALL='C.UTF-8'))


if __name__ == '__main__':
    main(*sys.argv[1:6])
