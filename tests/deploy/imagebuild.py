"""The project's image built without a container engine, the way Docker would build it.

- The build context is the project root filtered by ``.dockerignore`` with Docker's rules
  (moby/patternmatcher: patterns anchored at the root and cleaned, ``*`` and ``?`` within one
  path component, ``**`` across any number, ``!`` re-includes; a path is excluded when it or
  one of its parent directories matches, the last matching pattern deciding).
- The ``Dockerfile`` is read instruction by instruction (comments, line continuations, JSON and
  shell forms). ``FROM`` must name one ``python:X.Y...`` base; ``WORKDIR``, ``ENV``, ``ARG``,
  ``USER``, ``EXPOSE``, ``CMD``, ``LABEL`` are recorded; ``COPY``/``ADD`` copy from the filtered
  context into a fresh directory that stands for the image's filesystem (a source missing from
  the context, or excluded by ``.dockerignore``, fails the build as Docker's does).
- ``RUN``: a ``pip install`` runs with the pip of a fresh virtual environment of the base
  image's Python (the environment stands for the image's ``/usr/local``), in the image's
  working directory, with the image's ``ENV``; ``useradd``/``adduser`` creates the user's home
  in the tree. Any other command fails the build by name: teach this module, rather than have
  the simulation skip a step the image takes.

Only what the Dockerfile put in the tree is there: the services then run from it
(tests/deploy/stack.py), never from the checkout.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIP_TIMEOUT_SECONDS = 300


class BuildError(AssertionError):
    """The image cannot be built as the Dockerfile says (an AssertionError: a test failure)."""


# --- .dockerignore ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    text: str
    exclusion: bool  # a `!pattern`: re-includes what it matches
    regex: re.Pattern[str]


def _regex(pattern: str) -> re.Pattern[str]:
    """patternmatcher's translation of one cleaned pattern into a regular expression."""
    out, i = "^", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1 : i + 2] == "*":
                i += 1
                if pattern[i + 1 : i + 2] == "/":
                    i += 1
                out += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise BuildError(f".dockerignore: unterminated class in {pattern!r}")
            out += pattern[i : end + 1].replace("[!", "[^")
            i = end
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


def read_dockerignore(text: str) -> list[Pattern]:
    patterns = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        cleaned = posixpath.normpath(line)
        if len(cleaned) > 1 and cleaned.startswith("/"):
            cleaned = cleaned.lstrip("/")
        patterns.append(Pattern(line, exclusion, _regex(cleaned)))
    return patterns


def ignored(path: str, patterns: list[Pattern]) -> bool:
    """Whether the context leaves ``path`` (relative, '/'-separated) out: the last pattern that
    matches it or one of its parent directories decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    matched = False
    for pattern in patterns:
        if pattern.exclusion != matched:
            continue  # an exclusion only matters once excluded, an inclusion only before
        if any(pattern.regex.match(candidate) for candidate in candidates):
            matched = not pattern.exclusion
    return matched


@dataclass
class Context:
    """The build context: every file under ``root`` that .dockerignore lets through."""

    root: Path
    files: list[str] = field(default_factory=list)  # relative, '/'-separated, sorted

    @classmethod
    def of(cls, root: Path) -> Context:
        ignore = root / ".dockerignore"
        patterns = read_dockerignore(ignore.read_text()) if ignore.exists() else []
        reincludes = any(p.exclusion for p in patterns)
        found: list[str] = []
        for directory, dirs, names in os.walk(root):
            relative = Path(directory).relative_to(root).as_posix()
            prefix = "" if relative == "." else relative + "/"
            if not reincludes:  # nothing below an excluded directory can come back
                dirs[:] = [d for d in dirs if not ignored(prefix + d, patterns)]
            found += [prefix + n for n in names if not ignored(prefix + n, patterns)]
        return cls(root, sorted(found))

    def sources(self, source: str) -> tuple[list[str], bool]:
        """The context files a COPY source names, and whether it names a directory."""
        cleaned = posixpath.normpath(source.lstrip("/"))
        if cleaned == ".":
            return list(self.files), True
        if any(ch in cleaned for ch in "*?["):
            hits = [f for f in self.files if fnmatch.fnmatchcase(f, cleaned)]
            return hits, False
        if cleaned in self.files:
            return [cleaned], False
        below = [f for f in self.files if f.startswith(cleaned + "/")]
        return below, bool(below)


# --- Dockerfile --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str
    line: int

    def words(self) -> list[str]:
        """JSON form (``["a", "b"]``) or shell words."""
        text = self.args.strip()
        if text.startswith("["):
            try:
                loaded = json.loads(text)
            except ValueError:
                pass
            else:
                if isinstance(loaded, list):
                    return [str(word) for word in loaded]
        return shlex.split(text)


def instructions(text: str) -> Iterator[Instruction]:
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        if "<<" in args and keyword.upper() in ("RUN", "COPY"):
            raise BuildError(f"Dockerfile:{start}: heredocs are not simulated")
        yield Instruction(keyword.upper(), args.strip(), start)
    if pending:
        raise BuildError("Dockerfile: ends inside a continued line")


def _expand(text: str, env: dict[str, str]) -> str:
    return re.sub(
        r"\$(?:\{(\w+)(?::-([^}]*))?\}|(\w+))",
        lambda m: env.get(m[1] or m[3]) or (m[2] or ""),
        text,
    )


@dataclass
class Image:
    """What the build left: the filesystem tree and the configuration a container starts with."""

    root: Path  # the image's filesystem: only what the Dockerfile put there
    python: str  # the base image's Python, e.g. "3.11"
    prefix: Path  # the fresh environment standing for the image's /usr/local
    interpreter: str = ""  # the Python that environment was made from
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    homes: dict[str, str] = field(default_factory=dict)  # user -> home, from useradd
    exposed: list[int] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # what each step did

    def path(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")

    @property
    def home(self) -> str:
        return self.homes.get(self.user or "", "/root" if self.user in (None, "root") else "/")

    def process_env(self) -> dict[str, str]:
        """A container's environment: the base image's (PATH, LANG), then the image's ENV."""
        base = {
            "PATH": f"{self.prefix / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(self.path(self.home)),
        }
        return {**base, **self.env}


def base_python(dockerfile: str) -> str:
    """The X.Y of the Dockerfile's ``FROM python:X.Y...``."""
    froms = [i for i in instructions(dockerfile) if i.keyword == "FROM"]
    if len(froms) != 1:
        raise BuildError(f"Dockerfile: {len(froms)} FROM lines; one stage is simulated")
    match = re.fullmatch(r"(?:docker\.io/(?:library/)?)?python:(\d+\.\d+)\S*", froms[0].words()[0])
    if not match:
        raise BuildError(f"Dockerfile: FROM {froms[0].args}: only python:X.Y bases are simulated")
    return match[1]


class Builder:
    def __init__(self, context: Context, image: Image, interpreter: str) -> None:
        self.context = context
        self.image = image
        self.interpreter = interpreter
        self.args: dict[str, str] = {}

    def build(self, dockerfile: str) -> Image:
        for instruction in instructions(dockerfile):
            handler = getattr(self, f"_{instruction.keyword.lower()}", None)
            if handler is None:
                raise BuildError(
                    f"Dockerfile:{instruction.line}: {instruction.keyword} is not simulated"
                )
            handler(instruction)
        return self.image

    def _from(self, instruction: Instruction) -> None:
        subprocess.run(
            [self.interpreter, "-m", "venv", "--clear", str(self.image.prefix)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.image.log.append(f"FROM {instruction.args}: fresh environment of {self.interpreter}")

    def _arg(self, instruction: Instruction) -> None:
        name, _, default = instruction.args.partition("=")
        self.args[name.strip()] = default.strip()

    def _label(self, instruction: Instruction) -> None:
        pass

    def _workdir(self, instruction: Instruction) -> None:
        target = _expand(instruction.args, self.image.env)
        self.image.workdir = posixpath.join(self.image.workdir, target)
        self.image.path(self.image.workdir).mkdir(parents=True, exist_ok=True)

    def _env(self, instruction: Instruction) -> None:
        words = instruction.words()
        if words and "=" not in words[0]:  # legacy `ENV NAME value with spaces`
            name, _, value = instruction.args.partition(" ")
            self.image.env[name] = value.strip()
            return
        for word in words:
            name, _, value = word.partition("=")
            self.image.env[name] = _expand(value, {**self.args, **self.image.env})

    def _user(self, instruction: Instruction) -> None:
        self.image.user = instruction.args.split(":")[0]

    def _expose(self, instruction: Instruction) -> None:
        self.image.exposed += [int(word.split("/")[0]) for word in instruction.words()]

    def _cmd(self, instruction: Instruction) -> None:
        self.image.cmd = instruction.words()

    def _add(self, instruction: Instruction) -> None:
        words = instruction.words()
        if any("://" in w or w.endswith((".tar", ".gz", ".tgz", ".xz")) for w in words):
            raise BuildError(f"Dockerfile:{instruction.line}: ADD of a URL or archive")
        self._copy(instruction)

    def _copy(self, instruction: Instruction) -> None:
        words = [w for w in instruction.words() if not w.startswith("--")]
        flags = [w for w in instruction.words() if w.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            raise BuildError(f"Dockerfile:{instruction.line}: COPY --from is not simulated")
        *sources, dest = words
        dest_path = posixpath.normpath(
            posixpath.join(self.image.workdir, _expand(dest, self.image.env))
        )
        into_directory = dest.endswith("/") or len(sources) > 1
        for source in sources:
            files, is_directory = self.context.sources(source)
            if not files:
                raise BuildError(
                    f"Dockerfile:{instruction.line}: COPY {source}: not found in the build "
                    "context (missing, or excluded by .dockerignore)"
                )
            base = posixpath.normpath(source.lstrip("/"))
            for relative in files:
                if is_directory:
                    inside = relative if base == "." else relative[len(base) + 1 :]
                    target = posixpath.join(dest_path, inside)
                elif into_directory or len(files) > 1:
                    target = posixpath.join(dest_path, posixpath.basename(relative))
                else:
                    target = dest_path
                out = self.image.path(target)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.context.root / relative, out)
            self.image.log.append(f"COPY {source} -> {dest_path}: {len(files)} files")

    def _run(self, instruction: Instruction) -> None:
        words = instruction.words()
        command = " ".join(shlex.quote(w) for w in words)
        if re.match(r"^(python3?\s+-m\s+)?pip3?\s+install\b", instruction.args):
            self._pip(instruction, instruction.args)
        elif words and words[0] in ("useradd", "adduser"):
            name = words[-1]
            home = f"/home/{name}"
            if "--create-home" in words or "-m" in words:
                self.image.path(home).mkdir(parents=True, exist_ok=True)
            self.image.homes[name] = home
            self.image.log.append(f"RUN {command}: user {name}, home {home}")
        else:
            raise BuildError(
                f"Dockerfile:{instruction.line}: RUN {command}: the simulation runs pip installs "
                "and user creation only (teach tests/deploy/imagebuild.py this command)"
            )

    def _pip(self, instruction: Instruction, command: str) -> None:
        env = self.image.process_env()
        result = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=self.image.path(self.image.workdir),
            env=env,
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_SECONDS,
            check=False,
        )
        if result.returncode != 0:
            raise BuildError(
                f"Dockerfile:{instruction.line}: RUN {command} failed ({result.returncode}):\n"
                + (result.stdout + result.stderr)[-3000:]
            )
        self.image.log.append(f"RUN {command}: installed")


def reachable_by_anyone(path: str) -> bool:
    """Whether any user can run ``path``: it and every directory above it are world-executable
    (a Python under /root/.pyenv is not: the image's non-root user could not start it)."""
    real = Path(os.path.realpath(path))
    return all(os.stat(p).st_mode & 0o001 for p in (real, *real.parents))


def interpreter_for(python: str) -> str | None:
    """A Python X.Y outside any virtual environment (the checkout's .venv is never what the
    image sees): the first of this one's base (when it is X.Y), ``pythonX.Y`` on PATH and
    /usr/bin/pythonX.Y, preferring one that any user can run."""
    candidates = [f"/usr/bin/python{python}"]
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == python:
        candidates.insert(0, getattr(sys, "_base_executable", sys.executable))
    found = shutil.which(f"python{python}")
    if found:
        candidates.insert(1, found)
    existing = [c for c in dict.fromkeys(candidates) if os.path.exists(c) and _makes_venvs(c)]
    return next((c for c in existing if reachable_by_anyone(c)), None) or next(iter(existing), None)


def _makes_venvs(python: str) -> bool:
    """Debian's python3.X makes virtual environments only with python3.X-venv (ensurepip)."""
    check = [python, "-c", "import ensurepip, venv"]
    return subprocess.run(check, capture_output=True, timeout=30, check=False).returncode == 0


def build(workdir: Path, context_root: Path = ROOT, dockerfile: Path | None = None) -> Image:
    """Builds the image into ``workdir`` (``workdir/rootfs`` the tree, ``workdir/usr-local`` the
    environment). The base image's Python must be there (``interpreter_for``)."""
    text = (dockerfile or context_root / "Dockerfile").read_text()
    python = base_python(text)
    interpreter = interpreter_for(python)
    if interpreter is None:
        raise BuildError(f"python{python} not found: the image's base needs it")
    context = Context.of(context_root)
    image = Image(
        root=workdir / "rootfs",
        python=python,
        prefix=workdir / "usr-local",
        interpreter=interpreter,
    )
    image.root.mkdir(parents=True)
    return Builder(context, image, interpreter).build(text)
