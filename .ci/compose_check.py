"""What the Compose Specification's schema cannot see in docker-compose.yml, and what must hold
between the Dockerfile and the workspace. Run by .ci/compose-check, after the schema check.

    python3 .ci/compose_check.py [COMPOSE_FILE [DOCKERFILE]]

Paths in the compose file are taken from the repository root (the project directory), whatever
file is checked, so a broken copy elsewhere is checked against the real tree. Exit 1 with one
line per problem.
"""

import fnmatch
import re
import sys
import tomllib
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
problems: list[str] = []


def problem(where: str, what: str) -> None:
    problems.append(f"{where}: {what}")


# ---------------------------------------------------------------------------------------------
# Compose variables: `$$`, `$NAME`, `${NAME}`, `${NAME:-default}` (and -, :?, ?, :+, +).
VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\})"
)


def interpolate(text: str, where: str) -> str:
    """The value with every variable unset: its default, or nothing. Flags a `$` Compose would
    refuse (a bcrypt hash written bare, say)."""
    out, at = [], 0
    for m in VARIABLE.finditer(text):
        out.append(text[at : m.start()])
        at = m.end()
        if m["escaped"]:
            out.append("$")
        elif m["op"] in (":-", "-"):
            out.append(interpolate(m["arg"], where))
    out.append(text[at:])
    rest = VARIABLE.sub("", text)
    if "$" in rest:
        problem(where, f"{text!r}: a `$` that is not a variable (write `$$` for a literal one)")
    return "".join(out)


def walk(node, where: str, visit) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            walk(value, f"{where}.{key}", visit)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            walk(value, f"{where}[{i}]", visit)
    elif isinstance(node, str):
        visit(node, where)


def is_bind_source(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def check_compose(path: Path, dockerfile: Path) -> None:
    text = path.read_text()
    compose = YAML(typ="safe", pure=True).load(text)
    where = path.name
    walk(compose, "", lambda s, w: interpolate(s, f"{where}: {w.lstrip('.')}"))

    services = compose.get("services") or {}
    declared_volumes = set((compose.get("volumes") or {}).keys())
    runtime_tools = runtime_stage_tools(dockerfile)
    hms_commands = hms_subcommands()
    known_env = hms_env_names()
    host_ports: dict[str, str] = {}

    for required in ("nats", "postgres"):
        if required not in services:
            problem(where, f"no service `{required}` (`hms up` tells users to start it)")
        elif services[required].get("depends_on"):
            problem(
                f"{where}: services.{required}",
                "must depend on nothing: `docker compose up -d nats postgres` starts it alone",
            )

    for name, svc in services.items():
        at = f"{where}: services.{name}"
        if "image" not in svc and "build" not in svc:
            problem(at, "neither image nor build")
        built_here = "build" in svc
        if built_here:
            build = svc["build"]
            context = ROOT / interpolate(
                build if isinstance(build, str) else build.get("context", "."), at
            )
            if not context.is_dir():
                problem(at, f"build context {context} does not exist")
            elif isinstance(build, dict) and "dockerfile" in build:
                if not (context / interpolate(build["dockerfile"], at)).is_file():
                    problem(at, f"build.dockerfile {build['dockerfile']} does not exist")

        # depends_on: services that exist; service_healthy only on one with a healthcheck.
        depends = svc.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for target, how in depends.items():
            if target not in services:
                problem(at, f"depends_on {target}: no such service")
            elif (how or {}).get("condition") == "service_healthy":
                check = services[target].get("healthcheck")
                if not check or check.get("disable") or check.get("test") in (["NONE"], "NONE"):
                    problem(at, f"depends_on {target} being healthy, but it has no healthcheck")
        if name in depends:
            problem(at, "depends on itself")

        # Volumes: named ones declared at the top level; bind sources that exist.
        for volume in svc.get("volumes") or []:
            if isinstance(volume, str):
                source = interpolate(volume, at).split(":")[0]
                kind = "bind" if is_bind_source(source) else "volume"
            else:
                source = interpolate(volume.get("source", ""), at)
                kind = volume.get("type", "volume")
            if kind == "bind":
                if not (ROOT / source).exists():
                    problem(at, f"bind mount source {source} does not exist")
            elif kind == "volume" and source and source not in declared_volumes:
                problem(at, f"volume {source} is not declared under the top-level volumes")

        env_files = svc.get("env_file") or []
        for entry in [env_files] if isinstance(env_files, str) else env_files:
            file = entry if isinstance(entry, str) else entry.get("path", "")
            optional = isinstance(entry, dict) and entry.get("required") is False
            if not optional and not (ROOT / interpolate(file, at)).is_file():
                problem(at, f"env_file {file} does not exist")

        # Published ports: no host address and port twice.
        for port in svc.get("ports") or []:
            if isinstance(port, str):
                parts = interpolate(port, at).rsplit(":", 2)
                if len(parts) == 3:
                    key = f"{parts[0]}:{parts[1]}"
                elif len(parts) == 2:
                    key = f"0.0.0.0:{parts[0]}"
                else:
                    continue
                if key in host_ports:
                    problem(at, f"host port {key} is already published by {host_ports[key]}")
                host_ports[key] = name

        if not built_here:
            continue
        # For the image of this repository: the healthcheck's program is in the runtime stage,
        # the command is an `hms` subcommand, and every HMS_ variable is one the code reads.
        check = svc.get("healthcheck") or {}
        test = check.get("test")
        if isinstance(test, list) and test and test[0] == "CMD" and len(test) > 1:
            if test[1] not in runtime_tools:
                problem(
                    at,
                    f"healthcheck runs {test[1]!r}, which the Dockerfile's runtime stage does not"
                    f" install (it has: {', '.join(sorted(runtime_tools))})",
                )
        command = svc.get("command")
        first = command[0] if isinstance(command, list) and command else None
        if isinstance(command, str):
            first = command.split()[0] if command.split() else None
        if first is not None and first not in hms_commands:
            problem(at, f"command {first!r} is not an hms subcommand ({', '.join(sorted(hms_commands))})")
        env = svc.get("environment") or {}
        names = env.keys() if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        for var in names:
            if var.startswith("HMS_") and var not in known_env:
                problem(at, f"environment {var}: no code reads it (a typo?)")


def hms_subcommands() -> set[str]:
    """The subcommands of `hms`: the variants of `enum Action` in src/main.rs, kebab-cased as
    clap names them."""
    main = (ROOT / "src" / "main.rs").read_text()
    block = re.search(r"enum Action \{(.*?)\n\}", main, re.S)
    if not block:
        problem("src/main.rs", "no `enum Action` to read the subcommands from")
        return set()
    variants = re.findall(r"^\s{4}([A-Z][A-Za-z0-9]*)\b", block.group(1), re.M)
    return {re.sub(r"(?<!^)([A-Z])", r"-\1", v).lower() for v in variants}


def hms_env_names() -> set[str]:
    names = set()
    for rs in ROOT.glob("**/src/**/*.rs"):
        if "target" not in rs.parts:
            names.update(re.findall(r'"(HMS_[A-Z0-9_]+)"', rs.read_text()))
    return names


# ---------------------------------------------------------------------------------------------
def dockerfile_instructions(path: Path) -> list[tuple[int, str, str]]:
    """(line, INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf, start = [], "", 0
    for n, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf = ""
    return out


def runtime_stage_tools(dockerfile: Path) -> set[str]:
    """The programs the last stage has for a healthcheck: the binary copied in, and the Debian
    packages it installs that are named after their program."""
    tools = {"hms"}
    stages = [[]]
    for _, word, args in dockerfile_instructions(dockerfile):
        if word == "FROM":
            stages.append([])
        stages[-1].append((word, args))
    for word, args in stages[-1]:
        if word == "RUN":
            for install in re.findall(r"apt-get install ([^&;|]*)", args):
                tools.update(t for t in install.split() if not t.startswith("-"))
    return tools


def dockerignored(relative: str, patterns: list[tuple[bool, str]]) -> bool:
    """Whether .dockerignore keeps `relative` (or a folder above it) out of the context."""
    parts = Path(relative).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negated, pattern in patterns:
        for candidate in candidates:
            if fnmatch.fnmatchcase(candidate, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(candidate, pattern[3:])
            ):
                ignored = not negated
                break
    return ignored


def check_dockerfile(path: Path) -> None:
    where = path.name
    ignore_file = ROOT / ".dockerignore"
    patterns = []
    if ignore_file.is_file():
        for line in ignore_file.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                negated = line.startswith("!")
                patterns.append((negated, line.lstrip("!").strip("/")))

    sources = []
    text = path.read_text()
    for line, word, args in dockerfile_instructions(path):
        if word not in ("COPY", "ADD"):
            continue
        tokens = args.split()
        if any(t.startswith("--from") for t in tokens):
            continue
        tokens = [t for t in tokens if not t.startswith("--")]
        for source in tokens[:-1]:
            sources.append(source.rstrip("/"))
            if not any(ROOT.glob(source)):
                problem(f"{where}:{line}", f"COPY source {source} does not exist in the repository")
            elif dockerignored(source.rstrip("/"), patterns):
                problem(f"{where}:{line}", f"COPY source {source} is excluded by .dockerignore")

    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    members = manifest.get("workspace", {}).get("members", [])
    for required in ("Cargo.toml", "Cargo.lock", "src"):
        if required not in sources:
            problem(where, f"does not copy {required}")
    for member in members:
        for required in (f"{member}/Cargo.toml", f"{member}/src"):
            if required not in sources:
                problem(where, f"does not copy {required} (workspace member {member})")
        if f"{member}/src/lib.rs" not in text:
            problem(where, f"no stand-in / touch of {member}/src/lib.rs for the dependency layer")
        crate = tomllib.loads((ROOT / member / "Cargo.toml").read_text())
        if (ROOT / member / "build.rs").exists() and f"{member}/build.rs" not in sources:
            problem(where, f"does not copy {member}/build.rs")
        for kind in ("bin", "example", "test", "bench"):
            for target in crate.get(kind, []):
                problem(where, f"{member} declares a [[{kind}]] target: give it a stand-in")
    bins = {b["name"] for b in manifest.get("bin", [])}
    for built in re.findall(r"--bin ([A-Za-z0-9_-]+)", text):
        if built not in bins:
            problem(where, f"builds --bin {built}, which Cargo.toml does not declare")
    for kind in ("example", "test", "bench"):
        if manifest.get(kind):
            problem(where, f"the root package declares [[{kind}]] targets: give them stand-ins")

    wanted = manifest.get("workspace", {}).get("package", {}).get("rust-version")
    have = re.search(r"ARG RUST_VERSION=(\d+)\.(\d+)", text)
    if wanted and have:
        need = tuple(int(x) for x in wanted.split(".")[:2])
        if (int(have[1]), int(have[2])) < need:
            problem(where, f"RUST_VERSION {have[1]}.{have[2]} is older than rust-version {wanted}")
    elif wanted:
        problem(where, "no `ARG RUST_VERSION=X.Y` to compare with Cargo.toml's rust-version")


def main() -> int:
    compose = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docker-compose.yml"
    dockerfile = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "Dockerfile"
    check_dockerfile(dockerfile)
    check_compose(compose, dockerfile)
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if problems:
        return 1
    print(f"ok: {compose.name} and {dockerfile.name} agree with each other and the workspace")
    return 0


if __name__ == "__main__":
    sys.exit(main())
