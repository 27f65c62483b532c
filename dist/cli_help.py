"""Reads a program's command line from its `--help` text (CLI11's format,
base/command_line.hpp), so that the man pages and the bash completion
generated at build time (dist/man_page.py, dist/completion.py) say what the
programs say and cannot drift from them."""
import re
import subprocess

# Where CLI11 starts the description column; a longer name pushes the
# description onto the next line.
_COLUMN = 30
_SECTION = re.compile(r'^(Positionals|Options|Subcommands):$')


class Option:
    """One option (or positional) of a command."""

    def __init__(self, names, opts, description):
        self.names = names              # ['-h', '--help'] or ['SOCKET']
        self.opts = opts                # what CLI11 prints after the names
        self.choices = _choices(opts)   # the values of a {a,b,c} option
        self.description = description  # lines, as printed

    @property
    def kind(self):
        """'flag' (no value), 'choice', 'path' (a file or socket), 'dir', 'group'
        or 'value' (a number, a size, an id: nothing to complete)."""
        return _kind(self.names, self.opts, ' '.join(self.description))

    def positional(self):
        return not self.names[0].startswith('-')


class Command:
    """A program or one of its subcommands, as its --help shows it."""

    def __init__(self, name, text):
        self.name = name
        self.about = []        # the lines before "Usage:"
        self.usage = ''
        self.options = []      # Option, positionals first as printed
        self.subcommands = []  # (name, description lines)
        self._parse(text.splitlines())

    def _parse(self, lines):
        section = None
        for line in lines:
            if line.startswith('Usage: '):
                self.usage = line[len('Usage: '):].strip()
                section = 'usage'
                continue
            m = _SECTION.match(line)
            if m:
                section = m.group(1)
                continue
            if section is None:
                if line.strip():
                    self.about.append(line.strip())
            elif section in ('Positionals', 'Options'):
                self._option_line(line)
            elif section == 'Subcommands':
                self._subcommand_line(line)

    def _option_line(self, line):
        if not line.strip():
            return
        if re.match(r'^  \S', line):
            head, desc = _split_columns(line)
            tokens = head.split(' ')
            names = [re.sub(r'\{[^}]*\}$', '', n) for n in tokens[0].split(',')]  # --no-x{false}
            opts = ' '.join(tokens[1:])
            self.options.append(Option(names, opts, [desc.strip()] if desc.strip() else []))
        elif self.options:
            self.options[-1].description.append(line.strip())

    def _subcommand_line(self, line):
        if not line.strip():
            return
        if re.match(r'^  \S', line):
            name, _, desc = line.strip().partition(' ')
            self.subcommands.append((name, [desc.strip()] if desc.strip() else []))
        elif self.subcommands:
            self.subcommands[-1][1].append(line.strip())


# The whole of a name part as CLI11 prints it: names, type (with a range and a
# default), "..." or "x N", REQUIRED, Needs:/Excludes: lists.
_NAME_PART = re.compile(r'^\S+(?: [A-Z][^\s\[]*(?: in \[[^\]]*\]\S*)?)?(?: \.\.\.| x \d+)?'
                        r'(?: REQUIRED)?(?: Needs:(?: -\S+)+)?(?: Excludes:(?: -\S+)+)?$')


def _split_columns(line):
    """An option line's name part and its description. CLI11 starts the
    description at _COLUMN when "  " + the name part is shorter, else on the
    next line. A longer name part with a space where the column starts
    ("--drain-timeout FLOAT:FLOAT in [...]") would look like a name and a
    description: a line that is a name part as a whole is taken as one."""
    if _NAME_PART.match(line.strip()) or len(line) <= _COLUMN or line[_COLUMN - 1] != ' ':
        return line.strip(), ''
    return line[:_COLUMN].strip(), line[_COLUMN:].strip()


def _kind(names, opts, description):
    if not names[0].startswith('-'):
        return 'path' if names[0] in ('SOCKET', 'FILE', 'PATH') else 'value'
    if not re.match(r'^[A-Z]', opts) or opts.startswith(('Excludes:', 'Needs:')):
        return 'flag'
    if _choices(opts):
        return 'choice'
    types = set(re.findall(r'[A-Z]+', opts.split(' ')[0]))  # TEXT:SOCKET: TEXT, SOCKET
    if 'DIR' in types:
        return 'dir'
    if 'GROUP' in types:
        return 'group'
    if types & {'FILE', 'SOCKET', 'PATH'} or (
            'TEXT' in types and
            (re.search(r'\b(socket|file|path|directory)\b', description, re.I) or
             re.search(r'file|socket|path|dir', ' '.join(names)))):
        return 'path'
    return 'value'


def _choices(opts):
    m = re.match(r'^\S*?\{([^}]*)\}', opts)
    return m.group(1).split(',') if m else []


def read(program, *subcommand):
    """The Command that `program [SUBCOMMAND] --help` prints."""
    out = subprocess.run([program, *subcommand, '--help'], check=True, capture_output=True,
                         text=True, timeout=60).stdout
    return Command(' '.join(subcommand), out)
