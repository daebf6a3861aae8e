#!/usr/bin/env python3
"""Registry-free image packing for hack/images (Python standard library only).

Subcommands:

  layer --out L.tar [--exclude GLOB ...] SRC:DEST ...
      Pack host files into a deterministic layer tar: entries sorted, mtime 0,
      uid/gid 0 (root), directories 0755, files 0644 (0755 when executable on the
      host), parent directories of every DEST included. Prints the layer's diff_id.

  archive --out IMG.tar --tag REF [--tag REF ...] [--base BASE.tar] [--layer L.tar ...]
          [--env K=V ...] [--user U] [--workdir DIR] [--entrypoint JSON] [--cmd JSON]
          [--label K=V ...] [--created RFC3339] [--comment TEXT] [--gzip]
      Write a docker-archive (the `docker save` format: manifest.json with RepoTags,
      <id>.json image config with rootfs.diff_ids, one <id>/layer.tar per layer)
      that `ctr images import` accepts. With --base, the base archive's layers and
      config come first; --env entries replace base entries of the same name, the
      other options replace the base values. Prints the image id (config digest).

  filter --out OUT.tar [--drop GLOB ...] IN.tar
      Copy a layer tar, leaving out members whose name matches a --drop glob (for example
      './dev/?*': the device nodes mmdebstrap puts in its tarballs). Prints the new diff_id.

  inspect IMG.tar
      Print {"id", "tags", "diff_ids", "config"} of a docker-archive as JSON.
"""
from __future__ import annotations

import argparse
import fnmatch
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import sys
import tarfile
import tempfile

BUF = 1 << 20
EPOCH = "1970-01-01T00:00:00Z"
DEFAULT_EXCLUDES = ["__pycache__", "*.pyc", "*.pyo", ".pytest_cache", ".mypy_cache",
                    ".ruff_cache", "*.egg-info", ".DS_Store", "*~", "*.swp"]


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(BUF):
            h.update(chunk)
    return h.hexdigest()


def die(msg: str) -> None:
    sys.exit(f"oci_archive: {msg}")


# ---------------------------------------------------------------- layer

def _tarinfo(name: str, kind: bytes, mode: int, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.size = size
    ti.linkname = linkname
    ti.mtime = 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def cmd_layer(args: argparse.Namespace) -> None:
    excludes = DEFAULT_EXCLUDES + (args.exclude or [])

    def excluded(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in excludes)

    entries: dict[str, tuple[str, str | None]] = {}  # archive name -> (kind, host path)

    def add_parents(dest: str) -> None:
        parts = dest.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            entries.setdefault("/".join(parts[:i]), ("dir", None))

    for spec in args.paths:
        src, sep, dest = spec.partition(":")
        if not sep or not dest.startswith("/"):
            die(f"expected SRC:/ABS/DEST, got {spec!r}")
        dest = os.path.normpath(dest).lstrip("/")
        if not os.path.lexists(src):
            die(f"{src}: no such file or directory")
        add_parents(dest)
        if os.path.isdir(src) and not os.path.islink(src):
            entries[dest] = ("dir", src)
            for root, dirs, files in os.walk(src):
                dirs[:] = [d for d in dirs if not excluded(d)]
                rel = os.path.relpath(root, src)
                base = dest if rel == "." else f"{dest}/{rel}"
                for d in dirs:
                    full = os.path.join(root, d)
                    entries[f"{base}/{d}"] = ("link" if os.path.islink(full) else "dir", full)
                for fn in files:
                    if not excluded(fn):
                        full = os.path.join(root, fn)
                        entries[f"{base}/{fn}"] = ("link" if os.path.islink(full) else "file", full)
        else:
            entries[dest] = ("link" if os.path.islink(src) else "file", src)

    out_tmp = args.out + ".tmp"
    with tarfile.open(out_tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            kind, path = entries[name]
            if kind == "dir":
                tar.addfile(_tarinfo(name, tarfile.DIRTYPE, 0o755))
            elif kind == "link":
                tar.addfile(_tarinfo(name, tarfile.SYMTYPE, 0o777, linkname=os.readlink(path)))
            else:
                st = os.stat(path)
                if not stat.S_ISREG(st.st_mode):
                    die(f"{path}: not a regular file")
                mode = 0o755 if st.st_mode & 0o111 else 0o644
                with open(path, "rb") as f:
                    tar.addfile(_tarinfo(name, tarfile.REGTYPE, mode, size=st.st_size), f)
    os.replace(out_tmp, args.out)
    print("sha256:" + sha256_file(args.out))


def cmd_filter(args: argparse.Namespace) -> None:
    drops = args.drop or []
    out_tmp = args.out + ".tmp"
    dropped = 0
    with tarfile.open(args.input, "r:") as src, tarfile.open(out_tmp, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            if any(fnmatch.fnmatchcase(member.name, pat) for pat in drops):
                dropped += 1
                continue
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)
    os.replace(out_tmp, args.out)
    print(f"oci_archive: {args.input}: dropped {dropped} members", file=sys.stderr)
    print("sha256:" + sha256_file(args.out))


# ---------------------------------------------------------------- archive

def _read_archive(path: str) -> tuple[tarfile.TarFile, dict, dict]:
    tar = tarfile.open(path, "r:")
    try:
        manifest = json.load(tar.extractfile("manifest.json"))
    except KeyError:
        die(f"{path}: no manifest.json (not a docker-archive)")
    if len(manifest) != 1:
        die(f"{path}: expected exactly one image in manifest.json")
    config = json.load(tar.extractfile(manifest[0]["Config"]))
    return tar, manifest[0], config


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_tarinfo(name, tarfile.REGTYPE, 0o644, size=len(data)), io.BytesIO(data))


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def cmd_archive(args: argparse.Namespace) -> None:
    base_tar = None
    if args.base:
        base_tar, base_manifest, config = _read_archive(args.base)
        base_layers = list(base_manifest["Layers"])
    else:
        config = {"architecture": "amd64", "os": "linux", "config": {},
                  "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
        base_layers = []
    if len(base_layers) != len(config["rootfs"]["diff_ids"]):
        die(f"{args.base}: layer count does not match diff_ids")

    cfg = config.setdefault("config", {})
    if args.env:
        env = list(cfg.get("Env") or [])
        for item in args.env:
            key = item.split("=", 1)[0]
            env = [e for e in env if e.split("=", 1)[0] != key] + [item]
        cfg["Env"] = env
    for opt, key in (("user", "User"), ("workdir", "WorkingDir")):
        if getattr(args, opt) is not None:
            cfg[key] = getattr(args, opt)
    for opt, key in (("entrypoint", "Entrypoint"), ("cmd", "Cmd")):
        value = getattr(args, opt)
        if value is not None:
            parsed = json.loads(value)
            if parsed is not None and not (isinstance(parsed, list) and all(isinstance(s, str) for s in parsed)):
                die(f"--{opt} must be a JSON list of strings or null")
            cfg[key] = parsed
    if args.label:
        labels = dict(cfg.get("Labels") or {})
        labels.update(item.split("=", 1) for item in args.label)
        cfg["Labels"] = labels

    created = args.created or EPOCH
    config["created"] = created
    new_layers = []  # (diff_id, path to blob as stored, compressed?)
    tmpdir = tempfile.mkdtemp(prefix="oci_archive.", dir=os.path.dirname(os.path.abspath(args.out)))
    try:
        for i, layer in enumerate(args.layer or []):
            diff_id = "sha256:" + sha256_file(layer)
            blob = layer
            if args.gzip:
                blob = os.path.join(tmpdir, f"{i}.tar.gz")
                with open(layer, "rb") as src, open(blob, "wb") as raw, \
                        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as dst:
                    shutil.copyfileobj(src, dst, BUF)
            new_layers.append((diff_id, blob))
            config["rootfs"]["diff_ids"].append(diff_id)
            config.setdefault("history", []).append(
                {"created": created, "created_by": args.comment or f"kubetasks layer {os.path.basename(layer)}"})
        if not config["rootfs"]["diff_ids"]:
            die("an image needs at least one layer")

        config_bytes = _canonical(config)
        image_id = hashlib.sha256(config_bytes).hexdigest()
        layer_names = list(base_layers)
        for diff_id, blob in new_layers:
            layer_names.append(f"{sha256_file(blob) if args.gzip else diff_id[7:]}/layer.tar")
        manifest = [{"Config": f"{image_id}.json", "RepoTags": args.tag, "Layers": layer_names}]

        out_tmp = args.out + ".tmp"
        with tarfile.open(out_tmp, "w", format=tarfile.PAX_FORMAT) as out:
            seen = set()
            for name in base_layers:
                if name in seen:
                    continue
                seen.add(name)
                member = base_tar.getmember(name)
                ti = _tarinfo(name, tarfile.REGTYPE, 0o644, size=member.size)
                out.addfile(ti, base_tar.extractfile(member))
            for (diff_id, blob), name in zip(new_layers, layer_names[len(base_layers):]):
                if name in seen:
                    continue
                seen.add(name)
                with open(blob, "rb") as f:
                    out.addfile(_tarinfo(name, tarfile.REGTYPE, 0o644, size=os.path.getsize(blob)), f)
            _add_bytes(out, f"{image_id}.json", config_bytes)
            _add_bytes(out, "manifest.json", _canonical(manifest))
        os.replace(out_tmp, args.out)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
        if base_tar is not None:
            base_tar.close()
    print("sha256:" + image_id)


def cmd_inspect(args: argparse.Namespace) -> None:
    tar, manifest, config = _read_archive(args.archive)
    tar.close()
    print(json.dumps({"id": "sha256:" + manifest["Config"].removesuffix(".json"),
                      "tags": manifest.get("RepoTags") or [],
                      "diff_ids": config["rootfs"]["diff_ids"],
                      "config": config.get("config", {})}, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    pl = sub.add_parser("layer", help="pack host paths into a deterministic layer tar")
    pl.add_argument("--out", required=True)
    pl.add_argument("--exclude", action="append", help="extra basename glob to leave out")
    pl.add_argument("paths", nargs="+", metavar="SRC:DEST")
    pl.set_defaults(fn=cmd_layer)

    pa = sub.add_parser("archive", help="write a docker-archive")
    pa.add_argument("--out", required=True)
    pa.add_argument("--tag", action="append", required=True, help="repo tag, e.g. localhost/x/y:dev")
    pa.add_argument("--base", help="docker-archive whose layers and config come first")
    pa.add_argument("--layer", action="append", help="uncompressed layer tar to append")
    pa.add_argument("--env", action="append", help="K=V; replaces a base entry of the same name")
    pa.add_argument("--user")
    pa.add_argument("--workdir")
    pa.add_argument("--entrypoint", help='JSON list, e.g. ["/pause"], or null')
    pa.add_argument("--cmd", help="JSON list or null")
    pa.add_argument("--label", action="append", help="K=V")
    pa.add_argument("--created", help=f"RFC 3339 time stored in the config (default {EPOCH})")
    pa.add_argument("--comment", help="history entry for the new layers")
    pa.add_argument("--gzip", action="store_true", help="gzip the new layers")
    pa.set_defaults(fn=cmd_archive)

    pf = sub.add_parser("filter", help="copy a layer tar without some members")
    pf.add_argument("--out", required=True)
    pf.add_argument("--drop", action="append", help="member name glob to leave out")
    pf.add_argument("input")
    pf.set_defaults(fn=cmd_filter)

    pi = sub.add_parser("inspect", help="print id, tags and config of a docker-archive")
    pi.add_argument("archive")
    pi.set_defaults(fn=cmd_inspect)

    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
