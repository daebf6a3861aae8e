"""Container image references, as the distribution reference grammar (Docker, containerd) has them.

    reference := name [":" tag] ["@" digest]
    name      := [host[":" port] "/"] path-component ["/" path-component]*

Checked at admission by a CEL rule (``matches()``, RE2 in the API server), so that an image no
runtime could ever pull (10 KB of text, spaces, upper case in the path) is refused when the Task
is written rather than failing each attempt minutes later. The expressions are RE2 (google-re2
runs them in the unit tests); the name is at most 255 characters, as the grammar says.
"""

from __future__ import annotations

MAX_IMAGE_LENGTH = 1024  # a 255-character name, a 128-character tag and a sha512 digest fit
MAX_IMAGE_NAME_LENGTH = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = f"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = f"(?:{_DOMAIN_COMPONENT}(?:\\.{_DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])"
_NAME = f"(?:{_HOST}(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

IMAGE_REFERENCE = f"^{_NAME}(?::{_TAG})?(?:@{_DIGEST})?$"
IMAGE_NAME = f"^{_NAME}"  # the first match of this in a reference is its name (what find() returns)

IMAGE_MESSAGE = ("must be an image reference, [registry[:port]/]path[:tag][@digest]: the path in lowercase "
                 "letters and digits, separated by '/', '.', '_' or '-'; e.g. 'python:3.12-slim' or "
                 "'ghcr.io/acme/worker:1.4'")
IMAGE_NAME_MESSAGE = f"the image's name (before :tag and @digest) must be at most {MAX_IMAGE_NAME_LENGTH} characters"
