"""Container images of the services: `python -m aether_devstack images` (what `make images` runs).

One Dockerfile, deploy/docker/Dockerfile, holds every service's image: the stage named after the
service's folder is built from the repository root as `aether-<name>`, and the images
share every layer but their last. The build installs the versions locked in uv.lock from wheels
gathered here first, under `.build/images/deps` (one file of hashed requirements for every
service and the wheels for Linux and CPython 3.11), so the image build needs no network and no
index, and a second build reuses every layer whose inputs did not change.

`BASE_IMAGE` is the Python base of every image: `python:3.11-slim-bookworm` by default. Where no
registry serves it, `LOCAL_BASE` is made here from Debian packages (deploy/docker/base-image.sh),
kept for the next builds, and used instead, said in one line.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .reaper import dying_with_parent

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_BASE = "python:3.11-slim-bookworm"
LOCAL_BASE = "aether-base:bookworm"
BUILD_DIR = ROOT / ".build" / "images"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
PYTHON_VERSION = "3.11"
"""The base images' Python: the wheels gathered are for this version."""


class ImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class Service:
    name: str
    """Its folder under services/, its stage in the Dockerfile, its image's name."""

    @property
    def package(self) -> str:
        return f"aether-{self.name}"

    @property
    def module(self) -> str:
        return f"aether_{self.name.replace('-', '_')}"

    @property
    def image(self) -> str:
        return f"aether-{self.name}"


_STAGE = re.compile(r"^FROM\s+\S+\s+AS\s+([a-z][a-z0-9-]*)\s*$", re.MULTILINE | re.IGNORECASE)


def services() -> list[Service]:
    """Every service with an image: a stage of the Dockerfile named after its folder under
    services/ (the name used everywhere)."""
    stages = _STAGE.findall(DOCKERFILE.read_text())
    return [Service(name) for name in sorted(stages) if (ROOT / "services" / name).is_dir()]


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _tool(name: str) -> str:
    """A tool the Makefile installs into .tools (uv, pip), else one on PATH."""
    local = ROOT / ".tools" / "bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise ImageError(f"{name} not found: run `make install`")
    return found


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess[str]:
    # A build outlives nothing that started it: `make up` ends this process on a Ctrl-C.
    result = subprocess.run(argv, capture_output=True, text=True, preexec_fn=dying_with_parent(), **kw)
    if result.returncode != 0:
        raise ImageError(
            f"`{' '.join(argv[:4])} …` failed ({result.returncode}):\n"
            f"{(result.stdout + result.stderr)[-6000:]}"
        )
    return result


def docker_arch() -> str:
    """The engine's CPU architecture, in the form wheel platform tags use."""
    arch = _run(["docker", "version", "--format", "{{.Server.Arch}}"]).stdout.strip()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch or platform.machine())


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def ensure_base_image(tag: str = LOCAL_BASE) -> str:
    """Create the local base image with debootstrap unless it exists (about 40 s, once)."""
    if not image_exists(tag):
        _run(["bash", str(ROOT / "deploy" / "docker" / "base-image.sh"), tag])
    return tag


def resolve_base(base: str, *, say=print, replaceable: tuple[str, ...] = (DEFAULT_BASE,)) -> str:
    """The base to build on: `base` when the engine has it or can pull it. The default base that
    no registry serves (a machine without internet, or behind a mirror-less proxy) is replaced by
    the local one made from Debian packages, said in one line; any other base that cannot be
    pulled is an error naming it, not the engine's DNS message."""
    if base == LOCAL_BASE:
        return ensure_base_image(base)
    if image_exists(base):
        return base
    pulled = subprocess.run(["docker", "pull", "--quiet", base], capture_output=True, text=True)
    if pulled.returncode == 0:
        return base
    reason = _pull_reason(pulled.stderr or pulled.stdout)
    if base not in replaceable:
        raise ImageError(
            f"the base image {base} is not here and cannot be pulled ({reason}); "
            f"pull it by hand, or build on {LOCAL_BASE} (BASE_IMAGE={LOCAL_BASE}), made here from Debian packages"
        )
    say(
        f"no registry serves {base} ({reason}): building on {LOCAL_BASE} instead, made here from "
        "Debian packages by deploy/docker/base-image.sh (about a minute, once)"
    )
    return ensure_base_image(LOCAL_BASE)


def _pull_reason(output: str) -> str:
    """The engine's pull error in a few words."""
    text = output.strip().splitlines()[-1] if output.strip() else "no answer"
    for marker, words in (
        ("no such host", "the registry's name does not resolve"),
        ("i/o timeout", "the registry does not answer"),
        ("connection refused", "the registry refuses connections"),
        ("unauthorized", "the registry refuses this client"),
        ("not found", "the registry has no such image"),
        ("manifest unknown", "the registry has no such image"),
    ):
        if marker in text.lower():
            return words
    return text.removeprefix("Error response from daemon: ")[:160]


def _export(packages: list[str], *, workspace: bool) -> str:
    """The locked requirements of `packages` together (one venv holds them all)."""
    argv = [_tool("uv"), "export", "--frozen", "--no-dev", "--quiet", "--no-header", "--no-annotate"]
    for package in packages:
        argv += ["--package", package]
    argv += ["--only-emit-workspace", "--no-editable", "--no-hashes"] if workspace else ["--no-emit-workspace"]
    return _run(argv, cwd=ROOT).stdout


def prepare_deps(arch: str | None = None) -> Path:
    """Gather the locked requirements and wheels of every service into .build/images/deps:
    `services.txt` (hashed, the third-party packages), `services-workspace.txt` (the workspace
    packages, built from source in the image) and `services-modules.txt` (what the build imports
    to check itself).

    Keyed by uv.lock, the services and the architecture: when none changed, nothing is
    downloaded and the Docker layer that copies them stays cached.
    """
    arch = arch or docker_arch()
    deps = BUILD_DIR / "deps"
    found = services()
    names = [s.name for s in found]
    key = hashlib.sha256(
        (ROOT / "uv.lock").read_bytes() + f"{arch} {PYTHON_VERSION} {names} one-set".encode()
    ).hexdigest()
    stamp = BUILD_DIR / "deps.key"
    if deps.is_dir() and stamp.exists() and stamp.read_text() == key:
        return deps

    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    # Staged beside, not inside, .build/images: a concurrent build never sends a half-filled
    # directory to Docker (.dockerignore lets only .build/images through).
    staging = Path(tempfile.mkdtemp(prefix="deps-", dir=BUILD_DIR.parent))
    try:
        pip = [
            _tool("python"), "-m", "pip", "download", "--quiet", "--dest", str(staging / "wheels"),
            "--only-binary=:all:", "--implementation", "cp", "--python-version", PYTHON_VERSION,
            "--abi", f"cp{PYTHON_VERSION.replace('.', '')}",
            *(f"--platform={p}_{arch}" for p in _MANYLINUX),
        ]
        packages = [s.package for s in found]
        requirements = staging / "services.txt"
        requirements.write_text(_export(packages, workspace=False))
        # Paths from the repository root: the Dockerfile copies the source to /src.
        (staging / "services-workspace.txt").write_text(
            "".join(
                line.removeprefix("./") + "\n"
                for line in _export(packages, workspace=True).splitlines()
                if line.startswith("./")
            )
        )
        (staging / "services-modules.txt").write_text("".join(f"{s.module}\n" for s in found))
        _run([*pip, "--no-deps", "--require-hashes", "-r", str(requirements)])
        # The workspace packages are built from source in the image: their build backend too.
        _run([*pip, "hatchling"])
        if deps.exists():
            shutil.rmtree(deps)
        staging.rename(deps)
        stamp.write_text(key)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return deps


_MANYLINUX = ["manylinux_2_36", "manylinux_2_28", "manylinux_2_17", "manylinux2014", "manylinux_2_5", "manylinux1"]
"""Wheel platforms that run on Debian bookworm (glibc 2.36), the base of both base images."""


def prepare_ui() -> None:
    """The built Mission Board (ui/dist), served by the gateway; empty when it was not built."""
    ui = BUILD_DIR / "ui"
    if ui.exists():
        shutil.rmtree(ui)
    dist = ROOT / "ui" / "dist"
    if (dist / "index.html").is_file():
        shutil.copytree(dist, ui)
    else:
        ui.mkdir(parents=True)
        (ui / ".keep").write_text("the UI was not built (ui/dist) when this image was made\n")


def _image_id(ref: str) -> str | None:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True
    )
    return result.stdout.strip() if result.returncode == 0 else None


def _label(ref: str, name: str) -> str | None:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{name}"}}}}', ref],
        capture_output=True, text=True,
    )
    return result.stdout.strip() if result.returncode == 0 else None


_IGNORED = {"__pycache__", "node_modules"}


def inputs_digest(base: str) -> str:
    """A digest of everything the images are made of: the Dockerfile, the sources it copies, the
    gathered wheels, the UI, the base (one for all: the images share their layers). Even a fully
    cached `docker build` costs seconds per image on a copying storage driver; an image labelled
    with the same digest and built from its own stage is simply reused."""
    digest = hashlib.sha256(DOCKERFILE.read_bytes())
    digest.update(f"{base} {_image_id(base)}".encode())
    digest.update((BUILD_DIR / "deps.key").read_bytes())
    for root in (ROOT / "libs", ROOT / "services", BUILD_DIR / "ui"):
        for path in sorted(root.rglob("*")):
            if path.is_file() and not _IGNORED & set(path.parts) and path.suffix != ".pyc":
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


INPUTS_LABEL = "dev.aether.inputs"
CHECKOUT_LABEL = "dev.aether.checkout"


def build_image(
    service: Service, *, base: str = DEFAULT_BASE, tags: list[str] | None = None, digest: str | None = None
) -> str:
    """Build one service's image (its stage) unless one of the same inputs exists; returns its id
    (an id, because a tag can be moved by a concurrent build from another checkout)."""
    tags = tags if tags is not None else [f"{service.image}:latest", f"{service.image}:{version()}"]
    digest = f"{digest or inputs_digest(base)}:{service.name}"
    for tag in tags:
        if _label(tag, INPUTS_LABEL) == digest:
            image_id = _image_id(tag)
            assert image_id is not None
            for other in tags:
                _run(["docker", "tag", image_id, other])
            return image_id
    previous = _image_id(tags[0]) if tags else None
    argv = [
        "docker", "build", "--quiet", "--file", str(DOCKERFILE), "--target", service.name,
        "--build-arg", f"BASE_IMAGE={base}",
        "--label", f"{INPUTS_LABEL}={digest}", "--label", f"{CHECKOUT_LABEL}={ROOT}",
    ]
    for tag in tags:
        argv += ["--tag", tag]
    image_id = _run([*argv, str(ROOT)]).stdout.strip().splitlines()[-1]
    # The image this build replaced would stay on disk untagged (hundreds of MB on a copying
    # storage driver). Remove it only if this checkout made it: another checkout's build may
    # be about to start a container from it.
    if previous and previous != image_id and _label(previous, CHECKOUT_LABEL) == str(ROOT):
        subprocess.run(["docker", "image", "rm", previous], capture_output=True)
    return image_id


def build_images(
    names: list[str] | None = None, *, base: str = DEFAULT_BASE, tags: bool = True, say=print
) -> dict[str, str]:
    """Build the images of `names` (default: every service); returns name → image id. `say`
    tells the user when the base is replaced (see `resolve_base`)."""
    known = {s.name: s for s in services()}
    unknown = sorted(set(names or ()) - known.keys())
    if unknown:
        raise ImageError(f"no image stage for {', '.join(unknown)} in {DOCKERFILE.relative_to(ROOT)}; services: {', '.join(known)}")
    base = resolve_base(base, say=say)
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    prepare_deps()
    prepare_ui()
    digest = inputs_digest(base)
    return {
        name: build_image(known[name], base=base, tags=None if tags else [], digest=digest)
        for name in (names or list(known))
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aether-devstack images", description=__doc__.split("\n\n")[0])
    parser.add_argument("services", nargs="*", help="services to build (default: all)")
    parser.add_argument(
        "--base",
        default=DEFAULT_BASE,
        help=f"Python base image (default {DEFAULT_BASE}); {LOCAL_BASE} is created here when missing",
    )
    args = parser.parse_args(argv)
    # Stopped (`make up` on a Ctrl-C), a build still removes its half-gathered wheels.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        built = build_images(args.services, base=args.base)
    except ImageError as exc:
        print(exc, file=sys.stderr)
        return 1
    for name, image_id in built.items():
        print(f"aether-{name}:latest  aether-{name}:{version()}  {image_id[:19]}")
    return 0
